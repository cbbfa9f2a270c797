package integration

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// mountsOn counts the mounts stacked on dir.
func mountsOn(t *testing.T, dir string) int {
	t.Helper()
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) { return m.Mountpoint != dir, false })
	if err != nil {
		t.Fatal(err)
	}
	return len(ms)
}

// After kill -9 of a daemon, a new one on the same directory clears the
// dead mount (logged) and mounts: one mount, served, and none left after
// its clean stop — whether it starts at once (the kernel still answers
// the dead root's cached attributes) or once stat says ENOTCONN.
func TestRestartAfterKillClearsTheDeadMount(t *testing.T) {
	for _, tc := range []struct {
		name string
		late bool
	}{{"at once", false}, {"after the cache expired", true}} {
		t.Run(tc.name, func(t *testing.T) {
			_, mnt := freshMount(t)
			args := []string{"--socket=none", "--attr-timeout=200ms", "--entry-timeout=200ms"}
			a := start(t, opts{mnt: mnt, args: args})
			if _, err := os.Stat(a.path("null")); err != nil {
				t.Fatal(err)
			}
			if err := a.cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			<-a.exited
			if mountsOn(t, mnt) != 1 {
				t.Fatalf("after kill -9: %d mounts on %s, want the dead one", mountsOn(t, mnt), mnt)
			}
			if tc.late {
				ok := harness.Poll(10*time.Second, 5*time.Millisecond, func() bool {
					_, err := os.Stat(mnt)
					return errors.Is(err, syscall.ENOTCONN)
				})
				if !ok {
					t.Fatal("stat of the dead mount never said ENOTCONN")
				}
			}
			b := start(t, opts{mnt: mnt, args: args})
			if n := mountsOn(t, mnt); n != 1 {
				t.Errorf("%d mounts on %s, want 1: the dead one was mounted over", n, mnt)
			}
			if !strings.Contains(b.out.String(), "cleared a dead FUSE mount") {
				t.Errorf("the clearing is not logged:\n%s", b.out.String())
			}
			if _, err := os.Stat(b.path("null")); err != nil {
				t.Errorf("the new daemon does not serve: %v", err)
			}
			terminate(t, b)
			if n := mountsOn(t, mnt); n != 0 {
				t.Errorf("%d mounts on %s after a clean stop, want none", n, mnt)
			}
		})
	}
}

// A live mount on DIR is refused, naming what is mounted there; with
// --mount-over the daemon mounts over it, and leaves it as it was.
func TestLiveMountIsRefused(t *testing.T) {
	t.Run("tmpfs", func(t *testing.T) {
		_, mnt := freshMount(t)
		if err := unix.Mount("devfsd-test", mnt, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
		code, out := runDevfsd(t, []string{"mount", "--socket=none", mnt})
		line := errorLine(t, out)
		if code == 0 || !strings.Contains(line, "type tmpfs") || !strings.Contains(line, "--mount-over") {
			t.Errorf("exit %d, %q: want a refusal naming tmpfs and --mount-over", code, line)
		}
		if n := mountsOn(t, mnt); n != 1 {
			t.Errorf("%d mounts on %s, want the tmpfs only", n, mnt)
		}
		d := start(t, opts{mnt: mnt, args: []string{"--socket=none", "--mount-over"}})
		if n := mountsOn(t, mnt); n != 2 {
			t.Errorf("--mount-over: %d mounts on %s, want 2", n, mnt)
		}
		terminate(t, d)
		if n := mountsOn(t, mnt); n != 1 {
			t.Errorf("after the stop: %d mounts on %s, want the tmpfs", n, mnt)
		}
	})
	t.Run("another devfsd without a socket", func(t *testing.T) {
		_, mnt := freshMount(t)
		start(t, opts{mnt: mnt, args: []string{"--socket=none"}})
		code, out := runDevfsd(t, []string{"mount", "--socket=none", mnt})
		line := errorLine(t, out)
		if code == 0 || !strings.Contains(line, "fuse.devfsd") || !strings.Contains(line, "live") {
			t.Errorf("exit %d, %q: want a refusal naming the live devfsd", code, line)
		}
		if n := mountsOn(t, mnt); n != 1 {
			t.Errorf("%d mounts on %s, want the first daemon's", n, mnt)
		}
	})
}

// terminate stops d with SIGTERM and waits for its exit, leaving its
// mountpoint as the daemon left it (d.stop would unmount what is left).
func terminate(t *testing.T, d *daemon) {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
	case <-time.After(exitDeadline):
		t.Fatalf("devfsd did not exit within %v of SIGTERM", exitDeadline)
	}
}
