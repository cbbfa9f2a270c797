package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Issue 16: every mount is a usable /dev for a container. The mount (or
// a view) is bound over /dev in a private mount and pid namespace
// (unshare -m -p -f --mount-proc; mount --rbind, so that pts and shm
// come along), where real programs run.

// programDeadline bounds one program run in its namespace.
const programDeadline = 60 * time.Second

func needPrograms(t *testing.T) {
	t.Helper()
	for _, p := range []string{"unshare", "script", "tmux", "python3"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is not installed (.ci/run installs it)", p)
		}
	}
}

// devCmd is the command that runs script in a private mount and pid
// namespace whose /dev is dir. When script ends, the pid namespace ends
// with it: nothing it started outlives it.
func devCmd(ctx context.Context, tmp, dir, script string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "unshare", "-m", "-p", "-f", "--mount-proc", "--propagation", "private",
		"sh", "-c", `mount --rbind "$1" /dev && cd / && exec sh -ec "$2"`, "sh", dir, script)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "TERM=xterm", "TMPDIR="+tmp)
	return cmd
}

// inDev runs script with dir as /dev and a TMPDIR of the test's, and
// returns its output.
func inDev(t *testing.T, dir, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), programDeadline)
	defer cancel()
	out, err := devCmd(ctx, t.TempDir(), dir, script).CombinedOutput()
	if err != nil {
		t.Fatalf("with %s as /dev: %s: %v\n%s", dir, script, err, out)
	}
	return string(out)
}

// The programs of issue 16, each with what it must print.
var containerPrograms = []struct {
	name, script, want string
}{
	{"script", "script -qc tty /dev/null | tr -d '\\r'", "/dev/pts/0\n"},
	{"openpty", `python3 -c '
import os, tty
m, s = os.openpty()
tty.setraw(s)
print(os.ttyname(s))
os.write(m, b"x")
print(os.read(s, 1))
os.write(s, b"y")
print(os.read(m, 1))
'`, "/dev/pts/0\nb'x'\nb'y'\n"},
	{"tmux", `S=$(mktemp -u)
tmux -S $S new -d 'sleep 60'
tmux -S $S list-panes -F '#{pane_tty}'
tmux -S $S kill-server`, "/dev/pts/0\n"},
	{"shared_memory", `python3 -c '
from multiprocessing import shared_memory
n = 64 << 20
m = shared_memory.SharedMemory(create=True, size=n)
m.buf[:] = b"\x5a" * n
o = shared_memory.SharedMemory(name=m.name)
print(o.size >= n, bytes(o.buf[n-4:n]) == b"\x5a" * 4)
o.close(); m.close(); m.unlink()
'; stat -f -c %T /dev/shm`, "True True\ntmpfs\n"},
	{"ls fd", "ls -l /dev/fd/ | grep -c -- '->'", ""},
	{"stat ptmx", "stat -c '%F %t:%T %a' /dev/ptmx", "character special file 5:2 666\n"},
}

func runContainerPrograms(t *testing.T, dir string) {
	t.Helper()
	for _, p := range containerPrograms {
		t.Run(p.name, func(t *testing.T) {
			out := inDev(t, dir, p.script)
			if p.want == "" {
				if strings.TrimSpace(out) == "0" || out == "" {
					t.Fatalf("%s: %q", p.script, out)
				}
				return
			}
			if out != p.want {
				t.Fatalf("%s: %q, want %q", p.script, out, p.want)
			}
		})
	}
}

// specialsAt returns the file system types mounted on dir/pts and
// dir/shm, and reports any other mount below dir.
func specialsAt(t *testing.T, dir string) map[string]string {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	r := map[string]string{}
	for _, m := range ms {
		if m.Mountpoint != dir {
			r[strings.TrimPrefix(m.Mountpoint, dir+"/")] = m.FSType
		}
	}
	return r
}

// leftBehind lists every mount at or below dir.
func leftBehind(t *testing.T, dir string) []string {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	var r []string
	for _, m := range ms {
		r = append(r, m.Mountpoint+" ("+m.FSType+")")
	}
	return r
}

// The main mount, at the default configuration, is a /dev real
// programs can use: terminals and shared memory.
func TestContainerMainMount(t *testing.T) {
	needPrograms(t)
	d := start(t, opts{})
	if got := specialsAt(t, d.mnt); got["pts"] != "devpts" || got["shm"] != "tmpfs" || len(got) != 2 {
		t.Fatalf("mounts below %s: %v, want devpts on pts and tmpfs on shm", d.mnt, got)
	}
	runContainerPrograms(t, d.mnt)
	// Listed as the directories they are.
	ents, err := os.ReadDir(d.mnt)
	if err != nil {
		t.Fatal(err)
	}
	dirs := map[string]bool{}
	for _, e := range ents {
		dirs[e.Name()] = e.IsDir()
	}
	if !dirs["pts"] || !dirs["shm"] {
		t.Errorf("readdir: pts %v shm %v, want directories", dirs["pts"], dirs["shm"])
	}
	// A real /dev refuses to remove or rename them.
	for _, name := range []string{"pts", "shm"} {
		if err := unix.Rmdir(d.path(name)); err != unix.EBUSY {
			t.Errorf("rmdir %s: %v, want EBUSY", name, err)
		}
		if err := unix.Rename(d.path(name), d.path(name+".old")); err != unix.EBUSY {
			t.Errorf("rename %s: %v, want EBUSY", name, err)
		}
	}
	// From a mount namespace where pts is not a mount point (the kernel
	// does not refuse there), the daemon refuses.
	ctx, cancel := context.WithTimeout(context.Background(), programDeadline)
	defer cancel()
	out, err := exec.CommandContext(ctx, "unshare", "-m", "--propagation", "private", "sh", "-c",
		`umount -l "$1/pts" && rmdir "$1/pts"; echo "rmdir: $?"`, "sh", d.mnt).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Device or resource busy") {
		t.Errorf("rmdir of pts where it is not mounted: %v %s, want EBUSY from the daemon", err, out)
	}
	d.stop()
	if left := leftBehind(t, d.mnt); len(left) != 0 {
		t.Fatalf("after stop: %v", left)
	}
}

// pts and shm off: nothing mounted, the directories stay.
func TestContainerSpecialsOff(t *testing.T) {
	d := start(t, opts{args: []string{"--pts=off", "--shm=off"}})
	if got := specialsAt(t, d.mnt); len(got) != 0 {
		t.Fatalf("with pts and shm off: %v", got)
	}
	if st := lstat(t, d.path("pts")); st.Mode&unix.S_IFMT != unix.S_IFDIR {
		t.Errorf("pts: mode %o", st.Mode)
	}
}

// Each view is a /dev of its own: its own devpts, whose first pty is
// pts/0 whatever the other mounts hold, and its own shm; ctl view rm
// takes all three mounts away.
func TestContainerViews(t *testing.T) {
	needPrograms(t)
	aDir := viewDir(t, "a")
	bDir := viewDir(t, "b")
	files := t.TempDir()
	aFile := writeFile(t, files, "a.yaml", fmt.Sprintf("mountpoint: %s\ndeny: [kmsg]\n", aDir))
	bFile := writeFile(t, files, "b.yaml", fmt.Sprintf("mountpoint: %s\ndeny: [kmsg]\n", bDir))
	d := startCtl(t, "--view="+aFile, "--views-dir="+os.TempDir())
	d.mustCtl(t, "view", "add", bFile)
	// GET /v1/list shows them as what they are in the namespace.
	l, err := d.c.List(context.Background(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]string{}
	for _, n := range l.Nodes {
		types[n.Path] = n.Type
	}
	if types["pts"] != "dir" || types["shm"] != "dir" || types["ptmx"] != "char" {
		t.Errorf("list: pts %q shm %q ptmx %q", types["pts"], types["shm"], types["ptmx"])
	}
	for _, dir := range []string{aDir, bDir} {
		if got := specialsAt(t, dir); got["pts"] != "devpts" || got["shm"] != "tmpfs" || len(got) != 2 {
			t.Fatalf("mounts below the view %s: %v", dir, got)
		}
	}
	runContainerPrograms(t, aDir)

	// A pty held open on the main mount and one on view A: view B's
	// first pty is still pts/0. (The holders go before the views do: a
	// process's private mount namespace holds a copy of every mount there
	// was when it was made, which keeps each FUSE connection open.)
	var holders []func()
	for _, dir := range []string{d.mnt, aDir} {
		holders = append(holders, holdPty(t, dir))
	}
	if out := inDev(t, bDir, "script -qc tty /dev/null | tr -d '\\r'"); out != "/dev/pts/0\n" {
		t.Fatalf("view B's first pty with ptys held in the others: %q", out)
	}
	// Shared memory is per mount too.
	inDev(t, aDir, "echo a > /dev/shm/marker")
	if out := inDev(t, bDir, "ls /dev/shm"); out != "" {
		t.Errorf("view B's shm shows %q", out)
	}
	for _, stop := range holders {
		stop()
	}

	d.mustCtl(t, "view", "rm", bDir)
	if left := leftBehind(t, bDir); len(left) != 0 {
		t.Fatalf("after view rm: %v", left)
	}
	d.stop()
	for _, dir := range []string{d.mnt, aDir} {
		if left := leftBehind(t, dir); len(left) != 0 {
			t.Fatalf("after stop: %v", left)
		}
	}
}

// holdPty opens a pty with dir as /dev, in a process that holds it until
// the returned function (or the end of the test) stops it, and waits
// until it is open.
func holdPty(t *testing.T, dir string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := devCmd(ctx, t.TempDir(), dir, `python3 -c '
import os, sys
m, s = os.openpty()
print(os.ttyname(s), flush=True)
sys.stdin.read()
'`)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			stdin.Close()
			cmd.Wait()
			cancel()
		})
	}
	t.Cleanup(stop)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if strings.TrimSpace(line) != "/dev/pts/0" {
		t.Fatalf("held pty with %s as /dev: %q", dir, line)
	}
	return stop
}

// A daemon killed with SIGKILL leaves its mounts; the next start on the
// same mountpoint clears them (the dead FUSE mount and the specials on
// it) and mounts afresh, and its stop leaves nothing.
func TestContainerRestartAfterKill(t *testing.T) {
	d := start(t, opts{})
	if got := specialsAt(t, d.mnt); len(got) != 2 {
		t.Fatalf("mounts below %s: %v", d.mnt, got)
	}
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
	if left := leftBehind(t, d.mnt); len(left) != 3 {
		t.Fatalf("after SIGKILL: %v, want the dead FUSE mount, pts and shm", left)
	}
	d2 := startAt(t, d.mnt, opts{})
	if got := specialsAt(t, d2.mnt); got["pts"] != "devpts" || got["shm"] != "tmpfs" || len(got) != 2 {
		t.Fatalf("after the restart: %v", got)
	}
	if left := leftBehind(t, d2.mnt); len(left) != 3 {
		t.Fatalf("after the restart, want the FUSE mount and two specials: %v", left)
	}
	d2.stop()
	if left := leftBehind(t, d2.mnt); len(left) != 0 {
		t.Fatalf("after stop: %v", left)
	}
}
