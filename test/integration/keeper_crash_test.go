package integration

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// A daemon serving kept mounts again that is killed at its earliest
// moment (right after it wrote its id ceiling to the kept memfd, before
// it served a mount) leaves the mounts to the next start: the memfd still
// lists them, so the next daemon serves the same mounts (same device
// numbers) instead of dropping their descriptors (which ends their
// connections: ENOTCONN for whoever uses them) and mounting afresh. Mutant KP3 (mutant_kept_empty) starts the memfd empty on
// resume and fails here.
func TestKeeperCrashBeforeResumeKeepsTheMount(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "die-after-reserve")
	t.Setenv("DEVFSD_TEST_DIE_AFTER_RESERVE", flag)
	d := startKept(t, false)
	var main0, view0 unix.Stat_t
	if err := unix.Stat(d.mnt, &main0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(d.view, &view0); err != nil {
		t.Fatal(err)
	}
	first := d.pid()
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The next daemon takes the flag and dies; the one after it serves.
	harness.Until(t, mountDeadline, "the next daemon took the flag", func() bool {
		_, err := os.Stat(flag)
		return errors.Is(err, fs.ErrNotExist)
	})
	d.waitReady(first)
	for _, c := range []struct {
		dir string
		dev uint64
	}{{d.mnt, main0.Dev}, {d.view, view0.Dev}} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(c.dir, "null"), &st); err != nil {
			t.Fatalf("lstat %s/null after the crash before resume: %v", c.dir, err)
		}
		if st.Dev != c.dev {
			t.Errorf("%s is another mount now (device %d, was %d): the kept one was dropped", c.dir, st.Dev, c.dev)
		}
	}
	if out := d.out.String(); strings.Contains(out, "inherited descriptors not used") {
		t.Errorf("a start dropped kept descriptors:\n%s", d.out.Tail(40))
	}
	d.stopCleanly()
}
