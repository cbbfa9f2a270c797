package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/test/harness"
)

// needFUSE skips a test that mounts when the machine cannot.
func needFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounts FUSE: needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

// testConfig is a valid configuration mounting on a fresh directory, with
// a socket of its own.
func testConfig(t *testing.T) config.Config {
	t.Helper()
	base := t.TempDir()
	cfg := config.Defaults()
	cfg.Mountpoint = filepath.Join(base, "mnt")
	if err := os.Mkdir(cfg.Mountpoint, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.Socket = filepath.Join(base, "ctl.sock")
	cfg.ShutdownTimeout = time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// mounted reports whether dir is a mount point in this process's mount
// table.
func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// newTestDaemon builds a daemon of cfg whose log goes to buf; it is
// closed, and its mountpoint lazily unmounted, when the test ends.
func newTestDaemon(t *testing.T, cfg config.Config, buf *harness.SyncBuffer) *Daemon {
	t.Helper()
	d, err := New(cfg, testLogger(buf, zapcore.DebugLevel), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.Close()
		if mounted(t, cfg.Mountpoint) {
			t.Errorf("%s still mounted after Close", cfg.Mountpoint)
			unix.Unmount(cfg.Mountpoint, unix.MNT_DETACH)
		}
	})
	return d
}

// A daemon that cannot mount fails clearly and never tells systemd it is
// ready.
func TestRunMountFailureIsNotReady(t *testing.T) {
	needFUSE(t)
	sd := newFakeSystemd(t)
	cfg := testConfig(t)
	gone := filepath.Join(t.TempDir(), "gone")
	cfg.Mountpoint = gone // past Validate: the mount itself fails
	d := newTestDaemon(t, cfg, &harness.SyncBuffer{})
	err := d.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot mount on "+gone) {
		t.Fatalf("Run = %v, want the mount error", err)
	}
	for _, msg := range sd.pending() {
		if msg == "READY=1" {
			t.Error("READY=1 sent though nothing was mounted")
		}
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close after a failed Run: %v", err)
	}
}

// READY=1 once the mount is live; cancelling Run's context sends
// STOPPING=1, unmounts and returns nil.
func TestRunReadyThenCancelStopsCleanly(t *testing.T) {
	needFUSE(t)
	sd := newFakeSystemd(t)
	cfg := testConfig(t)
	var buf harness.SyncBuffer
	d := newTestDaemon(t, cfg, &buf)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	if got := sd.next(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	if !mounted(t, cfg.Mountpoint) {
		t.Fatalf("READY=1 but %s is not mounted", cfg.Mountpoint)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v after cancel", err)
	}
	if got := sd.next(); got != "STOPPING=1" {
		t.Errorf("notification %q, want STOPPING=1", got)
	}
	if extra := sd.pending(); len(extra) != 0 {
		t.Errorf("extra notifications %q", extra)
	}
	if mounted(t, cfg.Mountpoint) {
		t.Errorf("%s still mounted after Run returned", cfg.Mountpoint)
	}
	if _, err := os.Stat(cfg.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	if !bytes.Contains([]byte(buf.String()), []byte("server stopped")) {
		t.Errorf("log does not say stopped: %s", buf.String())
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close after Run: %v", err)
	}
}

// The mount taken away from outside is an error, and systemd still hears
// STOPPING=1.
func TestRunMountRemovedFromOutside(t *testing.T) {
	needFUSE(t)
	sd := newFakeSystemd(t)
	cfg := testConfig(t)
	d := newTestDaemon(t, cfg, &harness.SyncBuffer{})
	done := make(chan error, 1)
	go func() { done <- d.Run(context.Background()) }()
	if got := sd.next(); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	if err := unix.Unmount(cfg.Mountpoint, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrUnmountedOutside) {
		t.Fatalf("Run = %v, want ErrUnmountedOutside", err)
	}
	if got := sd.next(); got != "STOPPING=1" {
		t.Errorf("notification %q, want STOPPING=1", got)
	}
}

// Close is idempotent, also without Run.
func TestCloseIdempotentWithoutRun(t *testing.T) {
	cfg := testConfig(t)
	d := newTestDaemon(t, cfg, &harness.SyncBuffer{})
	if _, err := os.Stat(cfg.Socket); err != nil {
		t.Fatalf("New made no socket: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := d.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(cfg.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}
