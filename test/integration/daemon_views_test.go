package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Views mount only where the operator allowed: an empty directory
// beneath views_dir, with nothing live mounted on it, reached without a
// symlink. The same rule for the control API (ctl view add) and for
// --view files.
func TestViewPlacement(t *testing.T) {
	binDirReachable(t)
	views := t.TempDir()
	mk := func(rel string) string {
		t.Helper()
		p := filepath.Join(views, rel)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if mounted(t, p) {
				t.Errorf("%s left mounted", p)
				unix.Unmount(p, unix.MNT_DETACH)
			}
		})
		return p
	}
	outside := t.TempDir() // not beneath views_dir, and not empty
	writeFile(t, outside, "precious", "x")
	full := mk("full")
	writeFile(t, full, "file", "x")
	busy := mk("busy")
	if err := unix.Mount("devfsd-test", busy, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(busy, unix.MNT_DETACH) })
	mk("real/v")
	if err := os.Symlink(filepath.Join(views, "real"), filepath.Join(views, "link")); err != nil {
		t.Fatal(err)
	}
	good := mk("good")

	d := startCtl(t, "--views-dir="+views)
	for _, tc := range []struct {
		name, mp, say string
	}{
		{"outside views_dir", outside, "not beneath " + views},
		{"views_dir itself", views, "not beneath"},
		{"not empty", full, "not empty"},
		{"a live mount", busy, "type tmpfs"},
		{"through a symlink", filepath.Join(views, "link", "v"), "symlink"},
	} {
		_, errOut, code := d.ctl(t, nil, "view", "add", "--mountpoint", tc.mp)
		if code != 1 || !strings.Contains(errOut, "invalid_mountpoint") || !strings.Contains(errOut, tc.say) {
			t.Errorf("%s: view add %s: exit %d %q, want invalid_mountpoint saying %q", tc.name, tc.mp, code, errOut, tc.say)
		}
		if n := mountsOn(t, tc.mp); tc.mp != busy && n != 0 || tc.mp == busy && n != 1 {
			t.Errorf("%s: a refused view add mounted on %s", tc.name, tc.mp)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "precious")); err != nil {
		t.Errorf("the refused directory's content is hidden: %v", err)
	}
	d.mustCtl(t, "view", "add", "--mountpoint", good)
	if !mounted(t, good) {
		t.Fatalf("an allowed view is not mounted")
	}
	d.mustCtl(t, "view", "rm", good)

	// A --view file is held to the same rule: the start fails, nothing
	// is mounted.
	f := writeFile(t, t.TempDir(), "v.yaml", fmt.Sprintf("mountpoint: %s\n", outside))
	_, mnt := freshMount(t)
	code, out := runDevfsd(t, []string{"mount", "--socket=none", "--views-dir=" + views, "--view=" + f, mnt})
	line := errorLine(t, out)
	if code == 0 || !strings.Contains(line, "not beneath "+views) {
		t.Errorf("--view outside views_dir: exit %d %q", code, line)
	}
	if mounted(t, mnt) || mounted(t, outside) {
		t.Errorf("a refused --view left a mount")
	}
}
