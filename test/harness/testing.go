package harness

import (
	"fmt"
	"os"
	"testing"
	"time"
)

// MountT mounts b for the test: it skips the test (naming why) when the
// backend is unavailable, fails it on any other error, and registers a
// cleanup that always takes the mount down — also when the test fails or
// panics — and that logs the server's output when the test failed.
func MountT(t testing.TB, b Backend, o Options) *Mount {
	t.Helper()
	m, err := Start(b, o)
	if IsUnavailable(err) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatalf("mount %s: %v", b.Name(), err)
	}
	t.Cleanup(func() {
		alive := m.Alive()
		if err := m.Close(); err != nil {
			t.Errorf("unmount %s at %s: %v", m.Backend, m.Dir, err)
		}
		if m.proc != nil && (t.Failed() || !alive) {
			t.Logf("%s server output (alive until cleanup: %v):\n%s", m.Backend, alive, m.Output())
		}
		if left, err := MountsUnder(m.Dir); err != nil || len(left) > 0 {
			t.Errorf("mount %s left behind: %v %v", m.Dir, left, err)
		}
	})
	return m
}

// CheckNoMounts fails the test if a FUSE mount is left at or under this
// process's base directory or any of dirs (say, the test's own temp dirs).
func CheckNoMounts(t testing.TB, dirs ...string) {
	t.Helper()
	base, err := Base()
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range append([]string{base}, dirs...) {
		left, err := FUSEMountsUnder(d)
		if err != nil {
			t.Errorf("mountinfo: %v", err)
		}
		if len(left) > 0 {
			t.Errorf("FUSE mounts left under %s: %v", d, left)
		}
	}
}

// Main is TestMain for packages that use the harness: it runs the tests,
// then removes the built binaries and fails the run if any mount is left.
func Main(m *testing.M) {
	code := m.Run()
	if err := Cleanup(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Poll checks cond every interval until it holds (true) or d has passed
// (false). The sleep is a polling interval, not a wait for an event:
// every test of the module that waits on a condition goes through Poll or
// Until.
func Poll(d, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}

// Until waits for cond, polling every 2 ms, and fails t if it does not
// hold within d.
func Until(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Poll(d, 2*time.Millisecond, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}
