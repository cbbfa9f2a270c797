package devfsdconf

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// memFS is an in-memory FS of relative paths, standing in for the mount
// (the daemon through its control socket).
type memFS struct {
	mu    sync.Mutex
	nodes map[string]Stat
}

func newMemFS() *memFS { return &memFS{nodes: map[string]Stat{"": {Mode: TypeDir | 0755}}} }

func notExist(p string) error { return &fs.PathError{Op: "mem", Path: p, Err: fs.ErrNotExist} }

func (m *memFS) Lstat(p string) (Stat, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.nodes[p]
	if !ok {
		return Stat{}, notExist(p)
	}
	return st, nil
}

func (m *memFS) Chmod(p string, perm uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.nodes[p]
	if !ok {
		return notExist(p)
	}
	st.Mode = st.Mode&TypeMask | perm
	m.nodes[p] = st
	return nil
}

func (m *memFS) Chown(p string, uid, gid int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	st, ok := m.nodes[p]
	if !ok {
		return notExist(p)
	}
	if uid >= 0 {
		st.UID = uint32(uid)
	}
	if gid >= 0 {
		st.GID = uint32(gid)
	}
	m.nodes[p] = st
	return nil
}

func (m *memFS) Make(p string, st Stat, perm uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.nodes[p]; ok {
		return &fs.PathError{Op: "mem", Path: p, Err: fs.ErrExist}
	}
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) { // parents, as the daemon makes them
		if _, ok := m.nodes[d]; !ok {
			m.nodes[d] = Stat{Mode: TypeDir | 0755}
		}
	}
	st.Mode = st.Mode&TypeMask | perm
	m.nodes[p] = st
	return nil
}

func (m *memFS) Remove(p string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.nodes[p]; !ok {
		return notExist(p)
	}
	delete(m.nodes, p)
	return nil
}

func (m *memFS) MkdirAll(string) error { return nil }

func (m *memFS) ReadDir(dir string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for p := range m.nodes {
		if p != "" && path.Dir(p) == dir || (dir == "" && p != "" && !strings.Contains(p, "/")) {
			out = append(out, path.Base(p))
		}
	}
	sort.Strings(out)
	return out, nil
}

func (m *memFS) get(t *testing.T, p string) Stat {
	t.Helper()
	st, err := m.Lstat(p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return st
}

// fakeHost records what the rules ask for.
type fakeHost struct {
	Router
	mount   *memFS
	mu      sync.Mutex
	execs   []string
	execErr map[string]error
	modules map[string][]Stat // devname -> nodes the module registers (by name in Target)
}

func newHost(other FS) *fakeHost {
	m := newMemFS()
	return &fakeHost{Router: Router{Mountpoint: "/dev", Mount: m, Other: other}, mount: m,
		execErr: map[string]error{}, modules: map[string][]Stat{}}
}

func (h *fakeHost) Execute(_ context.Context, argv, env []string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.execs = append(h.execs, strings.Join(argv, " ")+" ["+strings.Join(env, " ")+"]")
	return h.execErr[argv[0]]
}

func (h *fakeHost) Modload(_ context.Context, devname string) ([]Event, error) {
	nodes, ok := h.modules[devname]
	if !ok {
		return nil, fmt.Errorf("no module for %s: %w", devname, fs.ErrNotExist)
	}
	var evs []Event
	for _, n := range nodes {
		name := n.Target
		n.Target = ""
		if err := h.mount.Make(name, n, n.Mode&07777); err != nil {
			continue
		}
		evs = append(evs, Event{Kind: Register, Name: name, Mode: n.Mode, Major: n.Major, Minor: n.Minor})
	}
	return evs, nil
}

func parse(t *testing.T, src string) *Config {
	t.Helper()
	cfg, err := Parse("test.conf", []byte(src), testOpts())
	if err != nil {
		t.Fatal(err)
	}
	if d := diagLines(cfg); len(d) > 0 {
		t.Fatalf("diagnostics: %q", d)
	}
	return cfg
}

func engine(h *fakeHost) *Engine { return &Engine{Host: h, Mountpoint: "/dev", Hostname: "box"} }

func TestEngineRunsEveryMatchingRuleInOrderUntilIgnore(t *testing.T) {
	cfg := parse(t, `
REGISTER ^tty([0-9]+)$ EXECUTE /bin/first \1 $devpath
REGISTER ^tty1$        IGNORE
REGISTER ^tty          EXECUTE /bin/fails
REGISTER .*            EXECUTE /bin/last $devname
CHANGE   .*            EXECUTE /bin/change
`)
	h := newHost(newMemFS())
	h.execErr["/bin/fails"] = errors.New("exit status 1")
	e := engine(h)
	if err := e.Handle(context.Background(), cfg, Event{Kind: Register, Name: "tty1"}); err != nil {
		t.Fatal(err)
	}
	err := e.Handle(context.Background(), cfg, Event{Kind: Register, Name: "tty2"})
	if err == nil || !strings.Contains(err.Error(), "test.conf:4: EXECUTE tty2: exit status 1") {
		t.Errorf("the failing rule: %v", err)
	}
	want := []string{
		"/bin/first 1 /dev/tty1 [DEVNAME=tty1 DEVPATH=/dev/tty1 MNTPNT=/dev ACTION=register]",
		"/bin/first 2 /dev/tty2 [DEVNAME=tty2 DEVPATH=/dev/tty2 MNTPNT=/dev ACTION=register]",
		"/bin/fails [DEVNAME=tty2 DEVPATH=/dev/tty2 MNTPNT=/dev ACTION=register]",
		"/bin/last tty2 [DEVNAME=tty2 DEVPATH=/dev/tty2 MNTPNT=/dev ACTION=register]",
	}
	if got := strings.Join(h.execs, "\n"); got != strings.Join(want, "\n") {
		t.Errorf("ran:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

func TestEnginePermissions(t *testing.T) {
	cfg := parse(t, "REGISTER ^tty.* PERMISSIONS root.tty 0620\nREGISTER ^pts/ PERMISSIONS -1.tty 0600\n")
	h := newHost(newMemFS())
	h.mount.Make("tty3", Stat{Mode: TypeChar, UID: 7, GID: 7, Major: 4, Minor: 3}, 0666)
	h.mount.Make("pts/0", Stat{Mode: TypeChar, UID: 1000, GID: 1000, Major: 136}, 0666)
	e := engine(h)
	for _, n := range []string{"tty3", "pts/0"} {
		if err := e.Handle(context.Background(), cfg, Event{Kind: Register, Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	if st := h.mount.get(t, "tty3"); st.Mode != TypeChar|0620 || st.UID != 0 || st.GID != 5 {
		t.Errorf("tty3: %#o %d:%d", st.Mode, st.UID, st.GID)
	}
	if st := h.mount.get(t, "pts/0"); st.Mode != TypeChar|0600 || st.UID != 1000 || st.GID != 5 {
		t.Errorf("pts/0: %#o %d:%d (the owner must stay)", st.Mode, st.UID, st.GID)
	}
	// A node that is not there: an error naming the rule, nothing else.
	err := e.Handle(context.Background(), cfg, Event{Kind: Register, Name: "tty9"})
	if err == nil || !strings.HasPrefix(err.Error(), "test.conf:1: PERMISSIONS tty9: ") {
		t.Errorf("missing node: %v", err)
	}
}

func TestEngineModloadRunsTheRegisterRulesOfWhatItLoaded(t *testing.T) {
	cfg := parse(t, `
LOOKUP   ^dsp$                 MODLOAD
LOOKUP   ^nothing$             MODLOAD
REGISTER ^(dsp|mixer)$         PERMISSIONS root.audio 0660
REGISTER ^mixer$               MKOLDCOMPAT
`)
	h := newHost(newMemFS())
	h.modules["dsp"] = []Stat{
		{Mode: TypeChar | 0600, Major: 14, Minor: 0, Target: "mixer"},
		{Mode: TypeChar | 0600, Major: 14, Minor: 3, Target: "dsp"},
	}
	e := engine(h)
	if err := e.Handle(context.Background(), cfg, Event{Kind: Lookup, Name: "dsp"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"dsp", "mixer"} {
		if st := h.mount.get(t, n); st.Mode != TypeChar|0660 || st.GID != 29 {
			t.Errorf("%s: %#o gid %d", n, st.Mode, st.GID)
		}
	}
	// No module: not an error of the rule (the lookup answers ENOENT).
	if err := e.Handle(context.Background(), cfg, Event{Kind: Lookup, Name: "nothing"}); err != nil {
		t.Errorf("no module: %v", err)
	}
}

func TestEngineModloadDepthIsBounded(t *testing.T) {
	cfg := parse(t, "LOOKUP .* MODLOAD\nREGISTER .* MODLOAD\n")
	h := newHost(newMemFS())
	for i := 0; i < 10; i++ {
		h.modules[fmt.Sprint("m", i)] = []Stat{{Mode: TypeChar | 0600, Target: fmt.Sprint("m", i+1)}}
	}
	err := engine(h).Handle(context.Background(), cfg, Event{Kind: Lookup, Name: "m0"})
	if err == nil || !strings.Contains(err.Error(), "nested 4 deep") {
		t.Errorf("a MODLOAD loop through REGISTER rules: %v", err)
	}
}

func TestEngineCompatLinks(t *testing.T) {
	cfg := parse(t, `
REGISTER   .* MKOLDCOMPAT
UNREGISTER .* RMOLDCOMPAT
REGISTER   .* MKNEWCOMPAT
UNREGISTER .* RMNEWCOMPAT
`)
	h := newHost(newMemFS())
	e := engine(h)
	ctx := context.Background()
	evs := []Event{
		{Kind: Register, Name: "vc/1", Mode: TypeChar | 0620, Major: 4, Minor: 1},
		{Kind: Register, Name: "scsi/host0/bus0/target0/lun0/part1", Mode: TypeBlock | 0660, Major: 8, Minor: 1},
		{Kind: Register, Name: "sound/dsp", Mode: TypeChar | 0660, Major: 14, Minor: 3},
	}
	for _, ev := range evs {
		h.mount.Make(ev.Name, Stat{Mode: ev.Mode, Major: ev.Major, Minor: ev.Minor}, ev.Mode&07777)
		if err := e.Handle(ctx, cfg, ev); err != nil {
			t.Fatal(err)
		}
		if err := e.Handle(ctx, cfg, ev); err != nil { // again: an existing link is fine
			t.Fatal(err)
		}
	}
	links := map[string]string{
		"tty1": "vc/1", "sda1": "scsi/host0/bus0/target0/lun0/part1", "dsp": "sound/dsp",
		"sd/c0b0t0u0p1": "../scsi/host0/bus0/target0/lun0/part1",
	}
	for l, target := range links {
		if st := h.mount.get(t, l); st.Mode&TypeMask != TypeLink || st.Target != target {
			t.Errorf("%s: %#o -> %q, want a symlink to %q", l, st.Mode, st.Target, target)
		}
	}
	// tty1 now points elsewhere: RMOLDCOMPAT leaves it alone.
	h.mount.Remove("tty1")
	h.mount.Make("tty1", Stat{Mode: TypeLink, Target: "somewhere"}, 0777)
	for _, ev := range evs {
		ev.Kind = Unregister
		if err := e.Handle(ctx, cfg, ev); err != nil {
			t.Fatal(err)
		}
	}
	for l := range links {
		_, err := h.mount.Lstat(l)
		if l == "tty1" && err != nil {
			t.Errorf("tty1 (not ours) was removed")
		}
		if l != "tty1" && err == nil {
			t.Errorf("%s still there after UNREGISTER", l)
		}
	}
}

// TestEngineCopyRestore runs devfsd's COPY/RESTORE recipe against a real
// state directory (device nodes in it need root).
func TestEngineCopyRestore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the saved copies are device nodes")
	}
	state := t.TempDir()
	cfg := parse(t, fmt.Sprintf(`
REGISTER ^pt[sy] IGNORE
REGISTER .* COPY %[1]s/$devname $devpath
CREATE   .* COPY $devpath %[1]s/$devname
CHANGE   .* COPY $devpath %[1]s/$devname
RESTORE  %[1]s
`, state))
	ctx := context.Background()

	// First life: zero is registered 0666, then root changes it; a user
	// makes a node and a link.
	h := newHost(OSFS{})
	e := engine(h)
	h.mount.Make("zero", Stat{Mode: TypeChar, Major: 1, Minor: 5}, 0666)
	if err := e.Handle(ctx, cfg, Event{Kind: Register, Name: "zero", Mode: TypeChar | 0666}); err != nil {
		t.Fatal(err) // nothing saved yet: nothing to do
	}
	h.mount.Chmod("zero", 0600)
	h.mount.Chown("zero", 0, 44)
	if err := e.Handle(ctx, cfg, Event{Kind: Change, Name: "zero", Mode: TypeChar | 0600, GID: 44}); err != nil {
		t.Fatal(err)
	}
	h.mount.Make("net/mine", Stat{Mode: TypeChar, Major: 10, Minor: 200, UID: 1000}, 0640)
	h.mount.Make("cdrom", Stat{Mode: TypeLink, Target: "sr0"}, 0777)
	for _, n := range []string{"net/mine", "cdrom"} {
		st := h.mount.get(t, n)
		if err := e.Handle(ctx, cfg, Event{Kind: Create, Name: n, Mode: st.Mode}); err != nil {
			t.Fatal(err)
		}
	}
	// A later CHANGE of a made node keeps its sticky marker.
	h.mount.Chmod("net/mine", 0660)
	if err := e.Handle(ctx, cfg, Event{Kind: Change, Name: "net/mine", Mode: TypeChar | 0660}); err != nil {
		t.Fatal(err)
	}
	checkOS := func(p string, mode, uid, gid uint32) {
		t.Helper()
		st, err := OSFS{}.Lstat(filepath.Join(state, p))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode != mode || st.UID != uid || st.GID != gid {
			t.Errorf("saved %s: %#o %d:%d, want %#o %d:%d", p, st.Mode, st.UID, st.GID, mode, uid, gid)
		}
	}
	checkOS("zero", TypeChar|0600, 0, 44)
	checkOS("net/mine", TypeChar|Sticky|0660, 1000, 0)

	// Second life: a new mount with zero at its default again.
	h2 := newHost(OSFS{})
	e2 := engine(h2)
	for _, r := range cfg.Restores {
		if err := e2.Restore(r.Dir); err != nil {
			t.Fatal(err)
		}
	}
	if st := h2.mount.get(t, "net/mine"); st.Mode != TypeChar|0660 || st.UID != 1000 || st.Major != 10 || st.Minor != 200 {
		t.Errorf("restored net/mine: %+v", st)
	}
	if st := h2.mount.get(t, "cdrom"); st.Mode&TypeMask != TypeLink || st.Target != "sr0" {
		t.Errorf("restored cdrom: %+v", st)
	}
	if _, err := h2.mount.Lstat("zero"); err == nil {
		t.Error("RESTORE made zero, which has no sticky marker: it waits for its REGISTER")
	}
	h2.mount.Make("zero", Stat{Mode: TypeChar, Major: 1, Minor: 5}, 0666)
	if err := e2.Handle(ctx, cfg, Event{Kind: Register, Name: "zero", Mode: TypeChar | 0666}); err != nil {
		t.Fatal(err)
	}
	if st := h2.mount.get(t, "zero"); st.Mode != TypeChar|0600 || st.GID != 44 {
		t.Errorf("zero after its REGISTER: %#o gid %d, want 0600 gid 44", st.Mode, st.GID)
	}
	if err := e2.Restore(filepath.Join(state, "missing")); err != nil {
		t.Errorf("RESTORE of a missing directory: %v", err)
	}
}

// CFUNCTION GLOBAL mksymlink, symlink and unlink, as devfsd called them:
// relative paths in the mount (devfsd ran in its mount point), absolute
// ones where they say; mksymlink takes an existing name as success,
// symlink does not.
func TestEngineGlobalFunctions(t *testing.T) {
	cfg := parse(t, `
REGISTER   ^tts/0$ CFUNCTION GLOBAL mksymlink $devname modem
REGISTER   ^tts/0$ CFUNCTION GLOBAL mksymlink $devname serial/by-name/modem
REGISTER   ^tts/1$ CFUNCTION GLOBAL symlink /dev/$devname modem1
REGISTER   ^tts/2$ CFUNCTION GLOBAL mksymlink $devname /state/links/ttyS2
UNREGISTER ^tts/0$ CFUNCTION GLOBAL unlink modem
UNREGISTER ^tts/1$ CFUNCTION GLOBAL unlink $mntpnt/modem1
`)
	other := newMemFS()
	h := newHost(other)
	e := engine(h)
	ctx := context.Background()
	for _, n := range []string{"tts/0", "tts/1", "tts/2"} {
		if err := e.Handle(ctx, cfg, Event{Kind: Register, Name: n, Mode: TypeChar | 0660}); err != nil {
			t.Fatalf("REGISTER %s: %v", n, err)
		}
	}
	for p, target := range map[string]string{"modem": "tts/0", "serial/by-name/modem": "tts/0", "modem1": "/dev/tts/1"} {
		if st := h.mount.get(t, p); st.Mode&TypeMask != TypeLink || st.Target != target {
			t.Errorf("%s: %#o -> %q, want a symlink to %q", p, st.Mode, st.Target, target)
		}
	}
	if st := other.get(t, "/state/links/ttyS2"); st.Target != "tts/2" {
		t.Errorf("the absolute mksymlink: %+v", st)
	}
	// Again: mksymlink's existing name is fine, symlink's is EEXIST.
	if err := e.Handle(ctx, cfg, Event{Kind: Register, Name: "tts/0", Mode: TypeChar | 0660}); err != nil {
		t.Errorf("mksymlink over its own link: %v", err)
	}
	if err := e.Handle(ctx, cfg, Event{Kind: Register, Name: "tts/1", Mode: TypeChar | 0660}); !errors.Is(err, fs.ErrExist) ||
		!strings.Contains(err.Error(), "test.conf:4") {
		t.Errorf("symlink over an existing name: %v, want EEXIST naming line 4", err)
	}
	for _, n := range []string{"tts/0", "tts/1"} {
		if err := e.Handle(ctx, cfg, Event{Kind: Unregister, Name: n, Mode: TypeChar | 0660}); err != nil {
			t.Errorf("UNREGISTER %s: %v", n, err)
		}
	}
	for _, p := range []string{"modem", "modem1"} {
		if _, err := h.mount.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after unlink: %v", p, err)
		}
	}
}

// \N counts groups as devfsd did: up to the first group that took no
// part, so a later one expands to nothing; and LOOKUPs of log and initctl
// run no rule.
func TestEngineDevfsdGroupsAndDiscardedLookups(t *testing.T) {
	cfg := parse(t, `
LOOKUP ^(a)?(b)(c)$ EXECUTE /bin/echo [\0] [\1] [\2] [\3]
LOOKUP .* EXECUTE /bin/echo $devname
`)
	h := newHost(newMemFS())
	e := engine(h)
	ctx := context.Background()
	for _, n := range []string{"bc", "abc", "log", "initctl"} {
		if err := e.Handle(ctx, cfg, Event{Kind: Lookup, Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	for _, x := range h.execs {
		got = append(got, x[:strings.Index(x, " [DEVNAME")])
	}
	want := "/bin/echo [bc] [] [] []|/bin/echo bc|/bin/echo [abc] [a] [b] [c]|/bin/echo abc"
	if strings.Join(got, "|") != want {
		t.Errorf("programs run:\n%s\nwant:\n%s", strings.Join(got, "|"), want)
	}
}
