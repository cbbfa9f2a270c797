package integration

// Helpers for the control-socket tests: a daemon with a socket of the
// test's own, the test helper (./testhelper) as a separate process whose
// output lines the test waits on, and devfsd ctl runs.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/test/harness"
)

// condDeadline bounds every wait on a condition in these tests.
const condDeadline = 20 * time.Second

// ctlDaemon is a daemon with its control socket.
type ctlDaemon struct {
	*daemon
	sock string
	c    *client.Client
}

// startCtl starts devfsd with a socket in a directory of its own
// (reachable by other users: the non-root tests need that).
func startCtl(t *testing.T, args ...string) *ctlDaemon {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "devfsd.sock")
	d := start(t, opts{args: append([]string{"--socket=" + sock}, args...)})
	c := client.New(sock)
	t.Cleanup(c.Close)
	return &ctlDaemon{daemon: d, sock: sock, c: c}
}

// until polls cond until it holds or the deadline passes.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !harness.Poll(condDeadline, 5*time.Millisecond, cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

var (
	helperOnce sync.Once
	helperBin  string
	helperErr  error
)

// buildHelper builds ./testhelper once, beside the devfsd binary (whose
// directory TestMain removes).
func buildHelper(t *testing.T) string {
	t.Helper()
	helperOnce.Do(func() {
		helperBin = filepath.Join(filepath.Dir(devfsdBin), "testhelper")
		out, err := exec.Command("go", "build", "-race", "-o", helperBin,
			"github.com/devfsd/devfsd/test/integration/testhelper").CombinedOutput()
		if err != nil {
			helperErr = errors.New(string(out))
		}
	})
	if helperErr != nil {
		t.Fatalf("building testhelper: %v", helperErr)
	}
	return helperBin
}

// helperProc is a running testhelper.
type helperProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	lines  []string
	more   chan struct{} // closed and replaced on every new line
	exited chan struct{}
}

// startHelper runs testhelper against d with extra flags and waits until
// it has attached.
func startHelper(t *testing.T, d *ctlDaemon, args ...string) *helperProc {
	t.Helper()
	bin := buildHelper(t)
	h := &helperProc{t: t, more: make(chan struct{}), exited: make(chan struct{})}
	h.cmd = exec.Command(bin, append([]string{"--socket=" + d.sock, "--mount=" + d.mnt}, args...)...)
	h.cmd.Dir = "/"
	h.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	h.cmd.Stderr = os.Stderr
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.mu.Lock()
			h.lines = append(h.lines, sc.Text())
			close(h.more)
			h.more = make(chan struct{})
			h.mu.Unlock()
		}
		h.cmd.Wait()
		close(h.exited)
	}()
	t.Cleanup(func() {
		h.kill()
		if t.Failed() {
			t.Logf("testhelper output:\n%s", strings.Join(h.all(), "\n"))
		}
	})
	h.waitLine("attached", func(l string) bool { return strings.HasPrefix(l, "attached ") })
	return h
}

func (h *helperProc) all() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.lines...)
}

// count returns how many lines match.
func (h *helperProc) count(match func(string) bool) int {
	n := 0
	for _, l := range h.all() {
		if match(l) {
			n++
		}
	}
	return n
}

// waitLines waits until n lines match.
func (h *helperProc) waitLines(what string, n int, match func(string) bool) []string {
	h.t.Helper()
	deadline := time.NewTimer(condDeadline)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		var got []string
		for _, l := range h.lines {
			if match(l) {
				got = append(got, l)
			}
		}
		more := h.more
		h.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-more:
		case <-h.exited:
			h.t.Fatalf("testhelper exited before %s; output:\n%s", what, strings.Join(h.all(), "\n"))
		case <-deadline.C:
			h.t.Fatalf("timed out waiting for %s (%d of %d); output:\n%s", what, len(got), n, strings.Join(h.all(), "\n"))
		}
	}
}

func (h *helperProc) waitLine(what string, match func(string) bool) string {
	h.t.Helper()
	return h.waitLines(what, 1, match)[0]
}

// kill SIGKILLs the helper and waits for it.
func (h *helperProc) kill() {
	h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.exited
}

// ctl runs devfsd ctl against d, as cred if not nil, and returns stdout,
// stderr and the exit status.
func (d *ctlDaemon) ctl(t *testing.T, cred *syscall.Credential, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, devfsdBin, append([]string{"ctl", "--socket=" + d.sock}, args...)...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("devfsd ctl %q: %v", args, err)
	}
	return stdout.String(), stderr.String(), code
}

// mustCtl runs devfsd ctl as root and fails the test unless it succeeds.
func (d *ctlDaemon) mustCtl(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := d.ctl(t, nil, args...)
	if code != 0 {
		t.Fatalf("devfsd ctl %q: exit %d: %s", args, code, errOut)
	}
	return out
}

// binDirReachable lets other users run the binaries.
func binDirReachable(t *testing.T) {
	t.Helper()
	if err := os.Chmod(filepath.Dir(devfsdBin), 0o755); err != nil {
		t.Fatal(err)
	}
}
