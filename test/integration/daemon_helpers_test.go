package integration

import (
	"context"
	"errors"
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

// runDeadline bounds a devfsd that is expected to exit by itself.
const runDeadline = 30 * time.Second

// freshMount makes an empty directory to mount on, in a base directory
// of the test's own, and makes sure nothing stays mounted on it.
func freshMount(t *testing.T) (base, mnt string) {
	t.Helper()
	base = t.TempDir()
	mnt = filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; i < 4 && mounted(t, mnt); i++ {
			t.Errorf("%s left mounted", mnt)
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
	})
	return base, mnt
}

// runDevfsd runs devfsd with args to its end (bounded by runDeadline)
// and returns its exit status and what it wrote.
func runDevfsd(t *testing.T, args []string, env ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), runDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, devfsdBin, args...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0 halt_on_error=0")
	cmd.Env = append(cmd.Env, env...)
	var out harness.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("devfsd %q did not exit within %v:\n%s", args, runDeadline, out.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("devfsd %q: %v", args, err)
	return 0, ""
}

// errorLine is devfsd's own error line ("devfsd: ..."), the last one it
// printed; the test fails if there is none, or if devfsd panicked.
func errorLine(t *testing.T, out string) string {
	t.Helper()
	if strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") {
		t.Fatalf("devfsd panicked:\n%s", out)
	}
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "devfsd: ") {
		t.Fatalf("the last line is not devfsd's error: %q\n%s", last, out)
	}
	return last
}
