package harness

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { Main(m) }

// mountedTorn checks that Close took everything down: not mounted, no dir.
func checkTornDown(t *testing.T, dir string) {
	t.Helper()
	if ok, err := IsMounted(dir); err != nil || ok {
		t.Errorf("%s still mounted (%v)", dir, err)
	}
	if _, err := os.Lstat(dir); !os.IsNotExist(err) {
		t.Errorf("%s not removed: %v", dir, err)
	}
}

// TestMountRoundTrip mounts each available backend, checks it is a real
// mount that takes writes, and that Close leaves nothing.
func TestMountRoundTrip(t *testing.T) {
	for _, b := range Backends() {
		t.Run(b.Name(), func(t *testing.T) {
			m, err := Start(b, Options{Populate: []Populate{{"p", 3}}})
			if IsUnavailable(err) {
				t.Skip(err)
			}
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			var st, parent unix.Stat_t
			if err := unix.Stat(m.Dir, &st); err != nil {
				t.Fatal(err)
			}
			if err := unix.Stat(filepath.Dir(m.Dir), &parent); err != nil {
				t.Fatal(err)
			}
			if st.Dev == parent.Dev {
				t.Fatalf("%s has the device of its parent: not a mount", m.Dir)
			}
			if err := os.WriteFile(filepath.Join(m.Dir, "x"), []byte("hello"), 0o644); err != nil {
				t.Fatal(err)
			}
			if b, err := os.ReadFile(filepath.Join(m.Dir, "x")); err != nil || string(b) != "hello" {
				t.Fatalf("read back %q, %v", b, err)
			}
			ents, err := os.ReadDir(filepath.Join(m.Dir, "p"))
			if err != nil || len(ents) != 3 || ents[0].Name() != PopulateName(0) {
				t.Fatalf("populated dir: %v %v", ents, err)
			}
			if b.FUSE() != (m.Pid() != 0) {
				t.Fatalf("FUSE %v but pid %d", b.FUSE(), m.Pid())
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			checkTornDown(t, m.Dir)
			if err := m.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
	CheckNoMounts(t)
}

// TestBarefsCountsRequests: the request counts and CPU time that the
// benchmark divides by are there and move.
func TestBarefsCountsRequests(t *testing.T) {
	m := MountT(t, Barefs(), Options{Stats: true, Timeouts: true})
	before, err := m.Requests()
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	for i := 0; i < n; i++ {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(m.Dir, "missing"), &st); err != unix.ENOENT {
			t.Fatalf("stat missing: %v", err)
		}
	}
	after, err := m.Requests()
	if err != nil {
		t.Fatal(err)
	}
	// Timeouts 0: every stat of a missing name is one LOOKUP.
	if got := after["LOOKUP"] - before["LOOKUP"]; got != n {
		t.Fatalf("LOOKUP went from %d to %d, want +%d", before["LOOKUP"], after["LOOKUP"], n)
	}
	if _, err := m.CPU(); err != nil {
		t.Fatal(err)
	}
	if rss, err := m.RSS(); err != nil || rss <= 0 {
		t.Fatalf("RSS %d, %v", rss, err)
	}
	if _, err := MountT(t, Tmpfs(), Options{}).Requests(); err != ErrNoStats {
		t.Fatalf("tmpfs Requests: %v, want ErrNoStats", err)
	}
}

// TestKilledServerIsCleanedUp: a server that died (SIGKILL: no unmount of
// its own) leaves a dead mount; Close still detaches it and removes the dir.
func TestKilledServerIsCleanedUp(t *testing.T) {
	m, err := Start(Barefs(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := syscall.Kill(m.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	checkTornDown(t, m.Dir)
}

// TestBusyMountIsCleanedUp: an fd left open on the mount (as a failing
// test may leave) does not stop Close.
func TestBusyMountIsCleanedUp(t *testing.T) {
	for _, b := range []Backend{Tmpfs(), Barefs()} {
		m, err := Start(b, Options{})
		if err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(filepath.Join(m.Dir, "held"))
		if err != nil {
			m.Close()
			t.Fatal(err)
		}
		if err := m.Close(); err != nil {
			t.Errorf("%s: %v", b.Name(), err)
		}
		f.Close()
		checkTornDown(t, m.Dir)
	}
}

// TestHelperFailing is the child of TestFailingTestLeavesNoMount: it mounts
// and then fails or panics, as HARNESS_CHILD says.
func TestHelperFailing(t *testing.T) {
	mode := os.Getenv("HARNESS_CHILD")
	if mode == "" {
		t.Skip("helper: run by TestFailingTestLeavesNoMount")
	}
	for _, b := range []Backend{Tmpfs(), Barefs()} {
		m := MountT(t, b, Options{})
		os.Stdout.WriteString("MOUNT " + m.Dir + "\n")
	}
	switch mode {
	case "fatal":
		t.Fatal("failing on purpose")
	case "panic":
		panic("panicking on purpose")
	}
}

// TestFailingTestLeavesNoMount runs a test that mounts and then fails (and
// one that panics) in a child process, and checks every mount it made is
// gone and its directory removed.
func TestFailingTestLeavesNoMount(t *testing.T) {
	for _, mode := range []string{"fatal", "panic"} {
		t.Run(mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperFailing$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "HARNESS_CHILD="+mode)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("child passed:\n%s", out)
			}
			var dirs []string
			sc := bufio.NewScanner(bytes.NewReader(out))
			for sc.Scan() {
				if d, ok := strings.CutPrefix(sc.Text(), "MOUNT "); ok {
					dirs = append(dirs, d)
				}
			}
			if len(dirs) != 2 {
				t.Fatalf("child reported mounts %v:\n%s", dirs, out)
			}
			for _, d := range dirs {
				checkTornDown(t, d)
			}
			// The child's base dir: after a panic it keeps the
			// built binary but must hold no mount.
			CheckNoMounts(t, filepath.Dir(dirs[0]))
			if mode == "panic" {
				os.RemoveAll(filepath.Dir(dirs[0]))
			}
		})
	}
}

// TestRawFloor mounts rawfloor (barefs -raw) on a populated tree: the
// populated names stat as barefs's do, others are missing, and requests are
// counted.
func TestRawFloor(t *testing.T) {
	for _, b := range Backends() {
		if b.Name() == "rawfloor" {
			t.Fatal("rawfloor is among Backends()")
		}
	}
	if b, err := ByName("rawfloor"); err != nil || b != RawFloor() {
		t.Fatalf("ByName(rawfloor) = %v, %v", b, err)
	}
	m, err := Start(RawFloor(), Options{Populate: []Populate{{"d", 3}, {"e", 0}}, Stats: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var st unix.Stat_t
	for _, c := range []struct {
		path string
		mode uint32
	}{{"", unix.S_IFDIR | 0o755}, {"d", unix.S_IFDIR | 0o755}, {"e", unix.S_IFDIR | 0o755},
		{"d/" + PopulateName(0), unix.S_IFREG | 0o644}, {"d/" + PopulateName(2), unix.S_IFREG | 0o644}} {
		if err := unix.Lstat(filepath.Join(m.Dir, c.path), &st); err != nil || st.Mode != c.mode {
			t.Errorf("lstat %q: mode %o, %v; want %o", c.path, st.Mode, err, c.mode)
		}
	}
	for _, p := range []string{"x", "d/" + PopulateName(3), "e/" + PopulateName(0), "d/f00000001"} {
		if err := unix.Lstat(filepath.Join(m.Dir, p), &st); err != unix.ENOENT {
			t.Errorf("lstat %q: %v, want ENOENT", p, err)
		}
	}
	req, err := m.Requests()
	if err != nil {
		t.Fatal(err)
	}
	if req["LOOKUP"] < 7 {
		t.Errorf("requests %v: want at least 7 LOOKUPs", req)
	}
}
