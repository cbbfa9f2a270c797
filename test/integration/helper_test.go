// Package integration mounts devfsd as a separate process and acts on the
// mount through system calls. It has its own mount helper, older than
// test/harness, and keeps it: these tests need what harness.Options does
// not give (extra flags and environment, the -race build of devfsd, the
// SIGUSR2 test hook, the READY=1 check). TestMain builds cmd/devfsd once,
// with its test hooks (harness.TestHooksTag);
// start runs `devfsd mount` on a fresh directory with a NOTIFY_SOCKET of
// its own, waits (against a deadline, never sleeping blindly) for READY=1
// and checks the mount is then in /proc/self/mountinfo, and registers a
// cleanup that stops the daemon, lazily unmounts and removes the
// directory, whatever the test did.
package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

const (
	mountDeadline = 20 * time.Second
	exitDeadline  = 5 * time.Second
)

var devfsdBin string

func TestMain(m *testing.M) {
	os.Exit(func() int {
		if os.Geteuid() != 0 {
			fmt.Println("integration: skipped, needs root")
			return 0
		}
		if _, err := os.Stat("/dev/fuse"); err != nil {
			fmt.Println("integration: skipped, no /dev/fuse")
			return 0
		}
		dir, err := os.MkdirTemp("", "devfsd-integration-bin-")
		if err != nil {
			fmt.Println(err)
			return 1
		}
		defer os.RemoveAll(dir)
		devfsdBin = filepath.Join(dir, "devfsd")
		build := exec.Command("go", "build", "-race", "-tags", harness.BuildTags(), "-o", devfsdBin, "github.com/devfsd/devfsd/cmd/devfsd")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Printf("go build: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}())
}

// daemon is one running `devfsd mount`.
type daemon struct {
	t      *testing.T
	mnt    string
	cmd    *exec.Cmd
	out    *harness.SyncBuffer
	exited chan struct{}
	err    error // the process's exit, once exited is closed
	ready  chan string
	// hookFile is DEVFSD_TEST_HOOK_FILE, when the test asked for hooks.
	hookFile string
	hookSeq  int
}

type opts struct {
	args  []string // extra flags for devfsd mount
	env   []string // extra environment
	hooks bool     // set DEVFSD_TEST_HOOK_FILE
	mnt   string   // mount here (an existing directory) instead of a fresh one
}

// start mounts devfsd on a fresh directory and waits until it is live and
// has said READY=1.
func start(t *testing.T, o opts) *daemon {
	t.Helper()
	base := t.TempDir()
	// Let other users reach the mount (allow_other is the default).
	for _, dir := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mnt := o.mnt
	if mnt == "" {
		mnt = filepath.Join(base, "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return startAt(t, mnt, o)
}

// startAt is start on the directory mnt, which exists (and may hold what
// a killed daemon left).
func startAt(t *testing.T, mnt string, o opts) *daemon {
	t.Helper()
	base := t.TempDir()
	sockPath := filepath.Join(base, "notify.sock")
	sock, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, mnt: mnt, out: &harness.SyncBuffer{}, exited: make(chan struct{}), ready: make(chan string, 16)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := sock.Read(buf)
			if err != nil {
				return
			}
			d.ready <- string(buf[:n])
		}
	}()
	// The catalogue unless the test says otherwise (a later --devices
	// wins): the tests of the catalogue's devices must not depend on
	// this machine's, which is what the default would pick here.
	args := append([]string{"mount", "--log-level=debug", "--devices=catalogue"}, o.args...)
	args = append(args, mnt)
	d.cmd = exec.Command(devfsdBin, args...)
	d.cmd.Dir = "/" // never the mount
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	// GORACE: the race runtime otherwise sleeps 1 s at exit.
	d.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sockPath, "GORACE=atexit_sleep_ms=0 halt_on_error=0")
	d.cmd.Env = append(d.cmd.Env, o.env...)
	if o.hooks {
		d.hookFile = filepath.Join(base, "hooks")
		d.cmd.Env = append(d.cmd.Env, "DEVFSD_TEST_HOOK_FILE="+d.hookFile)
	}
	// If this test binary dies (a -timeout panic), devfsd gets SIGTERM
	// and unmounts instead of leaving its mount behind.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := harness.ForkOnSpawner(d.cmd); err != nil {
		sock.Close()
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		d.stop()
		sock.Close()
		if strings.Contains(d.out.String(), "WARNING: DATA RACE") {
			t.Errorf("the race detector fired in devfsd")
		}
		if t.Failed() {
			t.Logf("devfsd output:\n%s", d.out.String())
		}
	})
	// READY=1 must come, and only once the mount is live.
	deadline := time.NewTimer(mountDeadline)
	defer deadline.Stop()
	for {
		select {
		case msg := <-d.ready:
			if !strings.Contains(msg, "READY=1") {
				continue
			}
			if !mounted(t, mnt) {
				t.Fatalf("READY=1 before the mount is in /proc/self/mountinfo")
			}
			return d
		case <-d.exited:
			t.Fatalf("devfsd exited before READY=1: %v\n%s", d.err, d.out.String())
		case <-deadline.C:
			t.Fatalf("no READY=1 within %v\n%s", mountDeadline, d.out.String())
		}
	}
}

// mounted reports whether dir is a mount point now.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	m, err := harness.IsMounted(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitUnmounted polls mountinfo until dir is no mount point, or d passes.
func waitUnmounted(t *testing.T, dir string, d time.Duration) bool {
	return harness.Poll(d, 2*time.Millisecond, func() bool { return !mounted(t, dir) })
}

// stop sends SIGTERM, waits, kills, unmounts lazily: always leaves
// nothing behind.
func (d *daemon) stop() {
	select {
	case <-d.exited:
	default:
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.exited:
		case <-time.After(exitDeadline):
			d.t.Errorf("devfsd did not exit within %v of SIGTERM; killing it", exitDeadline)
			d.cmd.Process.Kill()
			<-d.exited
		}
	}
	if mounted(d.t, d.mnt) {
		unix.Unmount(d.mnt, unix.MNT_DETACH)
	}
}

// path returns a path in the mount.
func (d *daemon) path(name string) string { return filepath.Join(d.mnt, name) }

// alive reports whether the daemon is still running.
func (d *daemon) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// hook applies commands through the daemon's SIGUSR2 test hook (see
// cmd/devfsd/testhooks.go) and waits for them to be done.
func (d *daemon) hook(cmds ...string) {
	d.t.Helper()
	if d.hookFile == "" {
		d.t.Fatal("daemon started without hooks")
	}
	if err := os.WriteFile(d.hookFile, []byte(strings.Join(cmds, "\n")+"\n"), 0o644); err != nil {
		d.t.Fatal(err)
	}
	d.hookSeq++
	if err := d.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		d.t.Fatal(err)
	}
	var lines []string
	if !harness.Poll(10*time.Second, time.Millisecond, func() bool {
		data, err := os.ReadFile(d.hookFile + ".done")
		if err != nil {
			return false
		}
		lines = strings.Split(strings.TrimSpace(string(data)), "\n")
		return lines[0] == fmt.Sprint(d.hookSeq)
	}) {
		d.t.Fatalf("hook %q not applied within 10s", cmds)
	}
	for i, l := range lines[1:] {
		if l != "ok" {
			d.t.Fatalf("hook %q: %s", cmds[i], l)
		}
	}
}
