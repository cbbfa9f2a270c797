package fs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devfsd/devfsd/dcache"
)

// Real programs through a mount with its specials, bound over /dev in a
// private mount and pid namespace (unshare -m -p -f --mount-proc, then
// mount --rbind MNT /dev: the submounts come along), as a container's
// runtime would.

// programDeadline bounds one program run in its namespace.
const programDeadline = 60 * time.Second

// devRig is a mounted server with what a container's /dev needs — the
// base set's memory devices, tty, ptmx and fd links — and its specials.
func devRig(t *testing.T) (*rig, string) {
	t.Helper()
	for _, p := range []string{"unshare", "script", "tmux", "python3"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Fatalf("%s is not installed (.ci/run installs it)", p)
		}
	}
	r, mnt := mountedRig(t)
	for _, d := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}} {
		if _, err := r.ns.Register(d.name, dcache.Spec{Type: dcache.TypeChar, Mode: 0o666, Major: d.major, Minor: d.minor}, dcache.Caller{}); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "fd/0", "stdout": "fd/1", "stderr": "fd/2"} {
		if _, err := r.ns.Register(name, dcache.Spec{Type: dcache.TypeSymlink, Mode: 0o777, Target: target}, dcache.Caller{}); err != nil {
			t.Fatal(err)
		}
	}
	return r, mnt
}

// inDev runs the shell script in a private mount and pid namespace whose
// /dev is mnt, and returns its output. When the script ends, the pid
// namespace ends with it: nothing it started outlives it.
func inDev(t *testing.T, mnt, script string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), programDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-m", "-p", "-f", "--mount-proc", "--propagation", "private",
		"sh", "-c", `mount --rbind "$1" /dev && cd / && exec sh -ec "$2"`, "sh", mnt, script)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "TERM=xterm")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func mustInDev(t *testing.T, mnt, script string) string {
	t.Helper()
	out, err := inDev(t, mnt, script)
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return out
}

// Terminals and shared memory work for real programs, with ptmx the char
// device 5:2 the kernel resolves to the devpts beside it (what the base
// set and the kernel's devtmpfs have) and with ptmx a symlink to
// pts/ptmx (what runc and systemd-nspawn make): posix_openpt users work
// either way, and stat (which follows the link) shows a char 5:2 of
// mode 0666 either way; only lstat tells them apart.
func TestSpecialsPrograms(t *testing.T) {
	t.Run("ptmx char", func(t *testing.T) { testPrograms(t, false) })
	t.Run("ptmx symlink", func(t *testing.T) { testPrograms(t, true) })
}

func testPrograms(t *testing.T, symlink bool) {
	r, mnt := devRig(t)
	wantLstat := "character special file 5:2 666"
	if symlink {
		if err := r.ns.Unregister("ptmx", dcache.Caller{}); err != nil {
			t.Fatal(err)
		}
		if _, err := r.ns.Register("ptmx", dcache.Spec{Type: dcache.TypeSymlink, Mode: 0o777, Target: "pts/ptmx"}, dcache.Caller{}); err != nil {
			t.Fatal(err)
		}
		wantLstat = "symbolic link 0:0 777"
	}
	mountSpecialsT(t, r.s, SpecialOpts{Pts: SpecialRequired, Shm: SpecialRequired})

	t.Run("script", func(t *testing.T) {
		if out := mustInDev(t, mnt, "script -qc tty /dev/null"); !strings.Contains(out, "/dev/pts/0") {
			t.Fatalf("script -qc tty: %q, want /dev/pts/0", out)
		}
	})
	t.Run("openpty", func(t *testing.T) {
		out := mustInDev(t, mnt, `python3 -c '
import os, tty
m, s = os.openpty()
tty.setraw(s)
print(os.ttyname(s))
os.write(m, b"x")
print(os.read(s, 1))
os.write(s, b"y")
print(os.read(m, 1))
'`)
		if out != "/dev/pts/0\nb'x'\nb'y'\n" {
			t.Fatalf("openpty: %q", out)
		}
	})
	t.Run("tmux", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "tmux.sock")
		out := mustInDev(t, mnt, `tmux -S `+sock+` new -d 'sleep 60'
tmux -S `+sock+` list-panes -F '#{pane_tty}'
tmux -S `+sock+` kill-server`)
		if !strings.Contains(out, "/dev/pts/0") {
			t.Fatalf("tmux: %q, want its pane on /dev/pts/0", out)
		}
	})
	t.Run("stat ptmx", func(t *testing.T) {
		out := mustInDev(t, mnt, `stat -c '%F %t:%T %a' /dev/ptmx; stat -L -c '%F %t:%T' /dev/ptmx; test -c /dev/ptmx && echo char`)
		if out != wantLstat+"\ncharacter special file 5:2\nchar\n" {
			t.Fatalf("stat ptmx: %q", out)
		}
	})
	t.Run("shared_memory", func(t *testing.T) {
		out := mustInDev(t, mnt, `python3 -c '
from multiprocessing import shared_memory
n = 64 << 20
m = shared_memory.SharedMemory(create=True, size=n)
m.buf[:] = b"\x5a" * n
o = shared_memory.SharedMemory(name=m.name)
print(o.size >= n, bytes(o.buf[n-4:n]) == b"\x5a" * 4)
o.close(); m.close(); m.unlink()
'; stat -f -c %T /dev/shm`)
		if out != "True True\ntmpfs\n" {
			t.Fatalf("shared_memory of 64 MiB: %q", out)
		}
	})
	t.Run("ls fd", func(t *testing.T) {
		out := mustInDev(t, mnt, "ls -l /dev/fd/")
		if !strings.Contains(out, "0 ->") || !strings.Contains(out, "2 ->") {
			t.Fatalf("ls -l /dev/fd/: %q", out)
		}
	})
}
