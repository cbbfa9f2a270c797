package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// The modules: key over a real mount: an extension module given at start
// is loaded on a miss like a catalogue module; one added by a reload is
// seen at once by a lookup whose miss the kernel had cached for an hour,
// and only that miss is invalidated; an invalid modules edit is refused
// whole and changes nothing; removing a module unregisters nothing.
func TestModulesReload(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "devfsd.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const base = "negative_timeout: 1h\nmodules:\n" +
		"  - name: gadget\n" +
		"    nodes:\n" +
		"      - {path: gadget0, type: char, major: 241, minor: 7, mode: \"0640\", gid: 5}\n"
	const widget = "  - name: widget\n" +
		"    description: the widget board\n" +
		"    nodes:\n" +
		"      - {path: widgets, type: dir, mode: \"0750\"}\n" +
		"      - {path: widget0, type: char, major: 240, minor: 3, mode: \"0660\", gid: 20}\n" +
		"      - {path: widgets/first, type: symlink, target: ../widget0}\n"
	write(base)
	d := startCtl(t, "--config="+cfgPath)
	loads := func() float64 { return scrape(t, d)[`devfsd_loads_started_total`] }

	// The extension given at start loads on a miss.
	wantDev(t, d.path("gadget0"), unix.S_IFCHR, 0640, 241, 7, 5)
	var gadget unix.Stat_t
	if err := unix.Lstat(d.path("gadget0"), &gadget); err != nil {
		t.Fatal(err)
	}

	// widget0 and nothing-here are misses, cached for an hour in the
	// daemon and in the kernel: stats again reach no loader.
	for _, name := range []string{"widget0", "nothing-here"} {
		if err := unix.Lstat(d.path(name), new(unix.Stat_t)); err != unix.ENOENT {
			t.Fatalf("stat %s before the reload: %v", name, errString(err))
		}
	}
	before := loads()
	for i := 0; i < 5; i++ {
		unix.Lstat(d.path("widget0"), new(unix.Stat_t))
		unix.Lstat(d.path("nothing-here"), new(unix.Stat_t))
	}
	if n := loads() - before; n != 0 {
		t.Fatalf("%v loads for cached misses", n)
	}

	// Invalid modules edits: refused whole with invalid_config naming
	// the key and line; the running set stays, the cached miss too.
	for _, bad := range []struct{ yaml, says string }{
		{base + strings.Replace(widget, `mode: "0660"`, `mode: "010000"`, 1), "modules[1].nodes[1].mode: 10000 is outside 07777"},
		{base + widget + "      - {path: \"null\", type: char, major: 1, minor: 3}\n", `null is provided by catalogue module "base"`},
		{base + strings.Replace(widget, "target: ../widget0", "mode: \"0777\"", 1), "modules[1].nodes[2]"},
	} {
		write(bad.yaml)
		_, errOut, code := d.ctl(t, nil, "reload")
		if code != 1 || !strings.Contains(errOut, "invalid_config") || !strings.Contains(errOut, bad.says) || !strings.Contains(errOut, "line ") {
			t.Fatalf("reload of an invalid modules edit: exit %d %q, want invalid_config saying %q", code, errOut, bad.says)
		}
	}
	if err := unix.Lstat(d.path("widget0"), new(unix.Stat_t)); err != unix.ENOENT {
		t.Fatalf("widget0 after refused reloads: %v", errString(err))
	}
	if n := loads() - before; n != 0 {
		t.Fatalf("refused reloads invalidated something: %v loads", n)
	}

	// The real edit. devfsd ctl reload returns once the kernel has been
	// told; the very next stat loads the new module.
	write(base + widget)
	var res struct {
		Changed     []string `json:"changed"`
		Invalidated int      `json:"invalidated"`
	}
	out := d.mustCtl(t, "reload", "--json")
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("reload --json printed %q: %v", out, err)
	}
	// Only widget0 was a cached miss among the names widget provides.
	if strings.Join(res.Changed, ",") != "modules" || res.Invalidated != 1 {
		t.Fatalf("reload: %+v, want changed [modules], 1 invalidated", res)
	}
	wantDev(t, d.path("widget0"), unix.S_IFCHR, 0660, 240, 3, 20)
	if target, err := os.Readlink(d.path("widgets/first")); err != nil || target != "../widget0" {
		t.Fatalf("widgets/first: %q, %v", target, err)
	}
	if fi, err := os.Lstat(d.path("widgets")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0750 {
		t.Fatalf("widgets: %v, %v", fi, err)
	}

	// Only those: nothing-here is still the kernel's cached miss (no
	// request reaches the daemon), and the names that existed keep
	// their node.
	before = loads()
	for i := 0; i < 5; i++ {
		if err := unix.Lstat(d.path("nothing-here"), new(unix.Stat_t)); err != unix.ENOENT {
			t.Fatalf("nothing-here after the reload: %v", errString(err))
		}
	}
	if n := loads() - before; n != 0 {
		t.Fatalf("the reload invalidated nothing-here too: %v loads", n)
	}
	var gadgetAfter unix.Stat_t
	if err := unix.Lstat(d.path("gadget0"), &gadgetAfter); err != nil || gadgetAfter.Ino != gadget.Ino {
		t.Fatalf("gadget0 after the reload: ino %d (was %d), %v", gadgetAfter.Ino, gadget.Ino, err)
	}

	// SIGHUP removing widget: what it registered stays.
	ok := scrape(t, d)[`devfsd_reloads_total{result="ok"}`]
	write(base)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	until(t, "the SIGHUP reload applied", func() bool {
		return scrape(t, d)[`devfsd_reloads_total{result="ok"}`] == ok+1
	})
	wantDev(t, d.path("widget0"), unix.S_IFCHR, 0660, 240, 3, 20)
	if m := scrape(t, d); m[`devfsd_reloads_total{result="invalid"}`] != 3 {
		t.Errorf("invalid reloads counted %v, want 3", m[`devfsd_reloads_total{result="invalid"}`])
	}
	if !d.alive() || !mounted(t, d.mnt) {
		t.Fatal("the daemon or its mount went away")
	}
}

// wantDev checks that p is a node of type typ (S_IFCHR, S_IFBLK) with the
// given permission bits, device number and group.
func wantDev(t *testing.T, p string, typ, perm, major, minor, gid uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("stat %s: %v", p, err)
	}
	if st.Mode&unix.S_IFMT != typ || st.Mode&07777 != perm || unix.Major(st.Rdev) != major ||
		unix.Minor(st.Rdev) != minor || st.Gid != gid {
		t.Fatalf("%s: mode %o rdev %d:%d gid %d, want type %o perm %04o rdev %d:%d gid %d",
			p, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev), st.Gid, typ, perm, major, minor, gid)
	}
}
