package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// On a kernel without HAS_RESEND (before 6.9; simulated here by a mount
// that does not ask for it, DEVFSD_TEST_NO_RESEND), a request the killed
// daemon had read and not answered is never sent again. What its caller
// sees (docs/operator.md, "A kernel without HAS_RESEND"): it waits,
// while the new daemon serves everyone else, until a signal; then the new
// daemon ends the request with EINTR and the caller dies of its SIGTERM.
// Without that it could not even be killed until the mount went
// (third_party/go-fuse, orphans.go; mutant KP5 in its own module).
func TestKeeperWithoutResendASignalFreesAnOrphanedCall(t *testing.T) {
	d := startKeptEnv(t, []string{"DEVFSD_TEST_NO_RESEND=1", "DEVFSD_TEST_LOADER_DELAY=60s"}, false, "--loader-timeout=60s")
	if !strings.Contains(d.out.String(), "DEVFSD_TEST_NO_RESEND") {
		t.Fatalf("the daemon did not take the no-resend hook; its log:\n%s", d.out.Tail(20))
	}
	statBin, err := exec.LookPath("stat")
	if err != nil {
		t.Fatal("no stat(1)")
	}
	// A miss waits for the (delayed) loader: the daemon has read its
	// LOOKUP and holds it.
	caller := exec.Command(statBin, filepath.Join(d.mnt, "orphaned-name"))
	if err := caller.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { caller.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			// Stuck for want of an answer: end the mount's connection,
			// which ends the request.
			abortFUSE(t, d.mnt)
			select {
			case <-exited:
			case <-time.After(condDeadline):
				t.Errorf("the caller did not end within %v of the connection's abort", condDeadline)
			}
		}
	})
	inFlight := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
		defer cancel()
		st, err := d.c.Stats(ctx)
		return err == nil && st.Extra["lookup_in_flight"] == 1
	}
	if !harness.Poll(condDeadline, 5*time.Millisecond, inFlight) {
		t.Fatal("the miss never reached the loader")
	}
	old, _ := d.current()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	d.waitReady(old)
	if !strings.Contains(d.out.String(), "the kernel cannot resend requests") {
		t.Fatalf("the new daemon did not find the kernel unable to resend; its log:\n%s", d.out.Tail(30))
	}
	// The new daemon serves the mount.
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(d.mnt, "null"), &st); err != nil {
		t.Fatalf("lstat null through the new daemon: %v", err)
	}
	select {
	case <-exited:
		t.Fatalf("the orphaned call ended before any signal: %v", caller.ProcessState)
	default:
	}
	caller.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		ws, _ := caller.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Fatalf("the orphaned call's process ended with %v, want death by SIGTERM", caller.ProcessState)
		}
	case <-time.After(condDeadline):
		t.Fatalf("the orphaned call's process did not end within %v of SIGTERM", condDeadline)
	}
	d.stopCleanly()
}
