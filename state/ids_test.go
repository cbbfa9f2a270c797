package state

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/devfsd/devfsd/dcache"
)

// kept returns the kept entry of path, or nil.
func (e *env) kept(path string) *Entry {
	for _, k := range e.s.Entries() {
		if k.Path == path {
			return &k
		}
	}
	return nil
}

// The inode number of every kept node is kept: created nodes, registered
// devices (and the directories Register made for them), renamed ones under
// their new name; an unregistered device's number goes with it, its
// changed attributes and what is kept under it stay.
func TestIDsKept(t *testing.T) {
	e := open(t, t.TempDir())
	root := e.ns.Root()
	made, err := root.Mknod("made", 0o20600, 1, 3, user)
	e.must("mknod", err)
	dir, err := root.Mkdir("d", 0755, user)
	e.must("mkdir", err)
	inDir, err := dir.Symlink("s", "target", user)
	e.must("symlink", err)
	reg, err := e.ns.Register("snd/dsp", dcache.Spec{Type: dcache.TypeChar, Mode: 0600, Major: 14, Minor: 3}, builtin)
	e.must("register", err)
	snd, _ := e.ns.Resolve("snd")
	chg, err := e.ns.Register("ttyS0", dcache.Spec{Type: dcache.TypeChar, Mode: 0600, Major: 4, Minor: 64}, builtin)
	e.must("register", err)
	chg.SetAttr(dcache.SetAttrIn{Valid: dcache.SetMode, Mode: 0660}, user)
	other, _ := root.Mkdir("other", 0755, user)
	e.must("rename", e.ns.Rename(root, "d", other, "moved", 0, user))
	e.sync()
	for _, c := range []struct {
		path       string
		ino        uint64
		registered bool
	}{
		{"made", made.Ino(), false},
		{"other/moved", dir.Ino(), false},
		{"other/moved/s", inDir.Ino(), false},
		{"snd/dsp", reg.Ino(), true},
		{"snd", snd.Ino(), true},
		{"ttyS0", chg.Ino(), false},
	} {
		k := e.kept(c.path)
		if k == nil {
			t.Errorf("%s: not kept", c.path)
			continue
		}
		if k.Ino != c.ino || k.Registered != c.registered {
			t.Errorf("%s: kept ino %d registered %v, want %d %v", c.path, k.Ino, k.Registered, c.ino, c.registered)
		}
	}
	if e.kept("d") != nil || e.kept("d/s") != nil {
		t.Error("the rename's old names are still kept")
	}
	e = e.reopen()
	// Unregistering: a registered entry goes, alone; a changed one stays
	// without a number.
	n, err := e.ns.Register("snd/dsp", dcache.Spec{Type: dcache.TypeChar, Mode: 0600, Major: 14, Minor: 3}, builtin)
	e.must("register again", err)
	n2, err := e.ns.Register("ttyS0", dcache.Spec{Type: dcache.TypeChar, Mode: 0600, Major: 4, Minor: 64}, builtin)
	e.must("register again", err)
	e.sync()
	if k := e.kept("snd/dsp"); k == nil || k.Ino != n.Ino() {
		t.Fatalf("snd/dsp registered again: kept %+v, want ino %d", k, n.Ino())
	}
	if k := e.kept("ttyS0"); k == nil || k.Ino != n2.Ino() || k.Registered || k.Mode != 0660 {
		t.Fatalf("ttyS0 registered again: kept %+v, want ino %d, changed mode 0660", k, n2.Ino())
	}
	e.must("unregister", e.ns.Unregister("snd/dsp", builtin))
	e.must("unregister", e.ns.Unregister("ttyS0", builtin))
	e = e.reopen()
	if k := e.kept("snd/dsp"); k != nil {
		t.Errorf("an unregistered device is still kept: %+v", k)
	}
	if k := e.kept("snd"); k == nil || !k.Registered {
		t.Errorf("its directory, still registered, is not kept: %+v", k)
	}
	if k := e.kept("ttyS0"); k == nil || k.Ino != 0 || k.Mode != 0660 {
		t.Errorf("an unregistered changed device: kept %+v, want its mode, no number", k)
	}
}

// A registration that changes nothing kept journals nothing: a restart
// that registers the same base set again costs no write.
func TestIDsSameRegisterWritesNothing(t *testing.T) {
	e := open(t, t.TempDir())
	e.ns.Register("null", dcache.Spec{Type: dcache.TypeChar, Mode: 0666, Major: 1, Minor: 3}, builtin)
	e.sync()
	before := e.s.Stats().Commits
	// The same event again (the namespace refuses a second Register at
	// the name, so feed the sink as a restart's registration would).
	n, _ := e.ns.Resolve("null")
	a := n.Attr()
	e.s.Event(dcache.Event{Seq: e.ns.LastSeq() + 1, Kind: dcache.KindRegister, Path: "null", Ino: a.Ino,
		Type: dcache.TypeChar, Mode: a.Mode, Major: 1, Minor: 3, Atime: a.Atime, Mtime: a.Mtime})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.s.WaitDurable(ctx, e.ns.LastSeq()+1); err != nil {
		t.Fatal(err)
	}
	if after := e.s.Stats().Commits; after != before {
		t.Fatalf("an unchanged registration wrote %d records", after-before)
	}
}

// Reserve keeps the generation and raises the ceiling, durably, before
// and after Start; a lower ceiling changes nothing; the snapshot and the
// journal both carry them.
func TestReserve(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if g, c := s.IDs(); g != 0 || c != 0 {
		t.Fatalf("a new directory keeps gen %d ceiling %d", g, c)
	}
	ctx := context.Background()
	if err := s.Reserve(ctx, 77, 1<<32); err != nil { // before Start
		t.Fatal(err)
	}
	s.Start()
	if err := s.Reserve(ctx, 77, 3<<32); err != nil {
		t.Fatal(err)
	}
	if err := s.Reserve(ctx, 0, 2<<32); err != nil { // lower: nothing
		t.Fatal(err)
	}
	if g, c := s.IDs(); g != 77 || c != 3<<32 {
		t.Fatalf("kept gen %d ceiling %d, want 77 %d", g, c, uint64(3<<32))
	}
	s.Close() // no snapshot at Close: the journal has them
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if g, c := s.IDs(); g != 77 || c != 3<<32 {
		t.Fatalf("reopened: gen %d ceiling %d", g, c)
	}
	s.Close() // Open wrote a snapshot: read from it alone now
	if err := os.Remove(filepath.Join(dir, journalName)); err != nil {
		t.Fatal(err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if g, c := s.IDs(); g != 77 || c != 3<<32 {
		t.Fatalf("from the snapshot: gen %d ceiling %d", g, c)
	}
}

// A version 1 snapshot (before ids were kept) is read: its entries, no
// ids.
func TestSnapshotVersion1(t *testing.T) {
	dir := t.TempDir()
	v1 := `{"version":1,"n":3,"entries":[{"path":"x","created":true,"type":"fifo","mode":420,"uid":0,"gid":0}]}`
	if err := os.WriteFile(filepath.Join(dir, snapshotName), appendFrame(nil, []byte(v1)), 0600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	es := s.Entries()
	if len(es) != 1 || es[0].Path != "x" || !es[0].Created || es[0].Ino != 0 {
		t.Fatalf("entries %+v", es)
	}
	b, _ := os.ReadFile(filepath.Join(dir, snapshotName))
	payload, _, err := nextFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	var snap snapshotFile
	json.Unmarshal(payload, &snap)
	if snap.Version != snapshotVersion {
		t.Fatalf("rewritten as version %d, want %d", snap.Version, snapshotVersion)
	}
}

// openKept is open for a daemon that serves its kept mount again: the
// same generation, the inode counter at the kept ceiling, kept numbers
// in use.
func openKept(t *testing.T, dir string) *env {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	gen, ceiling := s.IDs()
	ns := dcache.New(dcache.Options{Sink: s, RegisterHook: s.RegisterHook, Generation: gen})
	ns.RaiseLastIno(ceiling)
	s.UseKeptIDs()
	s.Restore(ns)
	s.Start()
	t.Cleanup(func() { s.Close() })
	return &env{t: t, dir: dir, s: s, ns: ns}
}

// After a crash, the successor's nodes have the numbers the kernel holds:
// what users made (restored), registered devices and the directories
// Register made for them (given back by the register hook as they
// register again), and two hard links, kept as two entries of one
// number, do not share it. New nodes get numbers above the ceiling.
func TestKeptIDsGivenBack(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	ctx := context.Background()
	if err := e.s.Reserve(ctx, e.ns.Root().Gen(), e.ns.LastIno()+1000); err != nil {
		t.Fatal(err)
	}
	root := e.ns.Root()
	mine, _ := root.Mknod("mine", 0o10640, 0, 0, user)
	d, _ := root.Mkdir("d", 0o755, user)
	sub, _ := d.Symlink("s", "/x", user)
	e.must("link", root.Link("hard", mine, user))
	dsp, _ := e.ns.Register("snd/dsp", dcache.Spec{Type: dcache.TypeChar, Mode: 0o600, Major: 14, Minor: 3}, builtin)
	snd, _ := e.ns.Resolve("snd")
	inSnd, err := snd.Mknod("user-made", 0o10600, 0, 0, user)
	e.must("mknod in a registered dir", err)
	want := map[string]uint64{"d": d.Ino(), "d/s": sub.Ino(), "snd": snd.Ino(),
		"snd/dsp": dsp.Ino(), "snd/user-made": inSnd.Ino()}
	gen, ceiling := e.s.IDs()
	e.sync()
	e.s.Close()

	k := openKept(t, dir)
	if g := k.ns.Root().Gen(); g != gen {
		t.Fatalf("generation %d, want the kept %d", g, gen)
	}
	// The loader registers its device again, after Restore.
	if _, err := k.ns.Register("snd/dsp", dcache.Spec{Type: dcache.TypeChar, Mode: 0o600, Major: 14, Minor: 3}, builtin); err != nil {
		t.Fatal(err)
	}
	for p, ino := range want {
		n, err := k.ns.Resolve(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if n.Ino() != ino {
			t.Errorf("%s: ino %d, want the kept %d", p, n.Ino(), ino)
		}
	}
	h, err := k.ns.Resolve("hard")
	if err != nil {
		t.Fatal(err)
	}
	m, err := k.ns.Resolve("mine")
	if err != nil {
		t.Fatal(err)
	}
	if a, b := min(h.Ino(), m.Ino()), max(h.Ino(), m.Ino()); a != mine.Ino() || b <= ceiling {
		t.Errorf("two hard links restored with inos %d and %d (kept %d, ceiling %d): want the kept one and one above the ceiling",
			h.Ino(), m.Ino(), mine.Ino(), ceiling)
	}
	fresh, _ := k.ns.Root().Mkdir("fresh", 0o755, user)
	if fresh.Ino() <= ceiling {
		t.Errorf("a new node has ino %d, at or below the ceiling %d", fresh.Ino(), ceiling)
	}
}

// Without UseKeptIDs (a new mount) nothing takes a kept number.
func TestKeptIDsNotUsedForANewMount(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	root := e.ns.Root()
	for i := 0; i < 5; i++ {
		root.Mkdir("pad"+strconv.Itoa(i), 0o755, user)
	}
	mine, _ := root.Mknod("mine", 0o10640, 0, 0, user)
	e = e.reopen()
	e.sync()
	n, err := e.ns.Resolve("mine")
	if err != nil {
		t.Fatal(err)
	}
	if n.Ino() == mine.Ino() {
		t.Errorf("a new mount gave the restored node its kept number %d", mine.Ino())
	}
	if k := e.kept("mine"); k == nil || k.Ino != n.Ino() {
		t.Errorf("the kept entry has ino %+v, want the new number %d", k, n.Ino())
	}
}
