package state

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/devfsd/devfsd/dcache"
)

var (
	user    = dcache.Caller{Pid: 100, Uid: 1000, Gid: 1000, Origin: dcache.OriginFUSE}
	builtin = dcache.Caller{Origin: dcache.OriginBuiltin}
)

// env is a namespace whose sink is a store, as the daemon wires them.
type env struct {
	t   *testing.T
	dir string
	s   *Store
	ns  *dcache.Namespace
	log *observer.ObservedLogs
}

func open(t *testing.T, dir string) *env {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	s, err := Open(dir, Options{Logger: zap.New(core)})
	if err != nil {
		t.Fatal(err)
	}
	ns := dcache.New(dcache.Options{Sink: s, RegisterHook: s.RegisterHook})
	s.Restore(ns)
	s.Start()
	e := &env{t: t, dir: dir, s: s, ns: ns, log: logs}
	t.Cleanup(func() { s.Close() })
	return e
}

// sync waits until everything done so far is durable.
func (e *env) sync() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.s.WaitDurable(ctx, e.ns.LastSeq()); err != nil {
		e.t.Fatal(err)
	}
}

// reopen closes the store (as a crash would leave the files: no final
// snapshot is written at Close) and opens the directory again.
func (e *env) reopen() *env {
	e.t.Helper()
	e.sync()
	if err := e.s.Close(); err != nil {
		e.t.Fatal(err)
	}
	return open(e.t, e.dir)
}

func (e *env) must(what string, err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("%s: %v", what, err)
	}
}

func (e *env) attr(path string) dcache.Attr {
	e.t.Helper()
	n, err := e.ns.Resolve(path)
	if err != nil {
		e.t.Fatalf("resolve %s: %v", path, err)
	}
	return n.Attr()
}

func (e *env) absent(path string) {
	e.t.Helper()
	if _, err := e.ns.Resolve(path); err == nil {
		e.t.Errorf("%s exists, want it gone", path)
	}
}

// What users make and change comes back after a restart; what the loader
// registered does not, but its changed attributes are applied when it
// registers again.
func TestKeptAcrossRestart(t *testing.T) {
	e := open(t, t.TempDir())
	root := e.ns.Root()
	null, _ := e.ns.Register("null", dcache.Spec{Type: dcache.TypeChar, Mode: 0666, Major: 1, Minor: 3}, builtin)
	e.ns.Register("snd/dsp", dcache.Spec{Type: dcache.TypeChar, Mode: 0600, Major: 14, Minor: 3}, builtin)
	d, err := root.Mkdir("mine", 0750, user)
	e.must("mkdir", err)
	_, err = d.Mknod("dev", 0o20640, 10, 200, user)
	e.must("mknod", err)
	_, err = d.Symlink("link", "../null", user)
	e.must("symlink", err)
	_, err = d.Mknod("fifo", 0o10600, 0, 0, user)
	e.must("mkfifo", err)
	_, err = d.Mknod("file", 0o100644, 0, 0, user) // regular: not kept
	e.must("mknod file", err)
	_, err = null.SetAttr(dcache.SetAttrIn{Valid: dcache.SetMode | dcache.SetGid, Mode: 0600, Gid: 5}, user)
	e.must("chmod null", err)
	when := time.Unix(1000000000, 12345)
	_, err = null.SetAttr(dcache.SetAttrIn{Valid: dcache.SetMtime, Mtime: when}, user)
	e.must("touch null", err)
	e.must("chown root", func() error {
		_, err := root.SetAttr(dcache.SetAttrIn{Valid: dcache.SetMode, Mode: 0711}, user)
		return err
	}())

	e = e.reopen()
	if a := e.attr("mine"); a.Type != dcache.TypeDir || a.Mode&07777 != 0750 || a.Uid != 1000 {
		t.Errorf("mine: %+v", a)
	}
	if a := e.attr("mine/dev"); a.Type != dcache.TypeChar || a.Major != 10 || a.Minor != 200 || a.Mode&07777 != 0640 {
		t.Errorf("mine/dev: %+v", a)
	}
	if n, _ := e.ns.Resolve("mine/link"); n == nil {
		t.Error("mine/link not restored")
	} else if tg, _ := n.Readlink(); tg != "../null" {
		t.Errorf("mine/link -> %q", tg)
	}
	if a := e.attr("mine/fifo"); a.Type != dcache.TypeFifo {
		t.Errorf("mine/fifo: %+v", a)
	}
	e.absent("mine/file")
	e.absent("null") // registered: its loader brings it back
	e.absent("snd")
	if a := e.attr(""); a.Mode&07777 != 0711 {
		t.Errorf("root mode %o", a.Mode&07777)
	}
	n, err := e.ns.Register("null", dcache.Spec{Type: dcache.TypeChar, Mode: 0666, Major: 1, Minor: 3}, builtin)
	e.must("register null", err)
	if a := n.Attr(); a.Mode&07777 != 0600 || a.Gid != 5 || !a.Mtime.Equal(when) {
		t.Errorf("re-registered null: mode %o gid %d mtime %v; want the kept 0600, 5, %v", a.Mode&07777, a.Gid, a.Mtime, when)
	}
	// Another device at that name is not given null's attributes.
	e.ns.Unregister("null", builtin)
	n, _ = e.ns.Register("null", dcache.Spec{Type: dcache.TypeChar, Mode: 0666, Major: 1, Minor: 4}, builtin)
	if a := n.Attr(); a.Mode&07777 != 0666 {
		t.Errorf("another device at null got mode %o", a.Mode&07777)
	}
	// An unmodified registered device keeps its catalogue attributes.
	n, _ = e.ns.Register("snd/dsp", dcache.Spec{Type: dcache.TypeChar, Mode: 0600, Major: 14, Minor: 3}, builtin)
	if a := n.Attr(); a.Mode&07777 != 0600 {
		t.Errorf("snd/dsp mode %o", a.Mode&07777)
	}
}

// Removals, unregistrations and renames are kept as such; a renamed
// directory takes what is kept under it along.
func TestRemoveAndRename(t *testing.T) {
	e := open(t, t.TempDir())
	root := e.ns.Root()
	a, _ := root.Mkdir("a", 0755, user)
	b, _ := a.Mkdir("b", 0755, user)
	b.Mknod("c", 0o20600, 1, 1, user)
	root.Mknod("gone", 0o20600, 1, 2, user)
	root.Mkdir("other", 0755, user)
	reg, _ := e.ns.Register("hot/plug", dcache.Spec{Type: dcache.TypeChar, Mode: 0600, Major: 4, Minor: 64}, builtin)
	reg.SetAttr(dcache.SetAttrIn{Valid: dcache.SetMode, Mode: 0660}, user)
	e.ns.Register("made-by-ctl", dcache.Spec{Type: dcache.TypeFifo}, builtin)
	e.sync()
	e.must("unlink", root.Unlink("gone", user))
	other, _ := e.ns.Resolve("other")
	e.must("rename dir", e.ns.Rename(root, "a", other, "moved", 0, user))
	e.must("unregister", e.ns.Unregister("hot", builtin))
	e = e.reopen()
	e.absent("gone")
	e.absent("a")
	if a := e.attr("other/moved/b/c"); a.Major != 1 || a.Minor != 1 {
		t.Errorf("moved subtree: %+v", a)
	}
	e.absent("made-by-ctl")
	n, _ := e.ns.Register("hot/plug", dcache.Spec{Type: dcache.TypeChar, Mode: 0600, Major: 4, Minor: 64}, builtin)
	if a := n.Attr(); a.Mode&07777 != 0660 {
		t.Errorf("replugged device mode %o, want the kept 0660", a.Mode&07777)
	}
	// Exchange swaps what is kept.
	root = e.ns.Root()
	x, _ := root.Mkdir("x", 0700, user)
	x.Mknod("in-x", 0o10600, 0, 0, user)
	y, _ := root.Mkdir("y", 0755, user)
	y.Symlink("in-y", "t", user)
	e.must("exchange", e.ns.Rename(root, "x", root, "y", dcache.RenameExchange, user))
	e = e.reopen()
	if a := e.attr("y/in-x"); a.Type != dcache.TypeFifo {
		t.Errorf("y/in-x %+v", a)
	}
	if a := e.attr("x/in-y"); a.Type != dcache.TypeSymlink {
		t.Errorf("x/in-y %+v", a)
	}
	if a := e.attr("y"); a.Mode&07777 != 0700 {
		t.Errorf("y mode %o (x's, swapped)", a.Mode&07777)
	}
}

// A torn tail is dropped with a warning; a corrupt record ends the replay
// with a warning and the journal is kept aside; a damaged snapshot stops
// Open with a clear error and is left as it was.
func TestDamage(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	root := e.ns.Root()
	root.Mkdir("one", 0755, user)
	e.sync()
	root.Mkdir("two", 0755, user)
	e.sync()
	root.Mkdir("three", 0755, user)
	e.sync()
	e.s.Close()
	jPath := filepath.Join(dir, journalName)
	data, _ := os.ReadFile(jPath)
	// Three records; find their boundaries.
	var ends []int
	for off := 0; off < len(data); {
		_, n, err := nextFrame(data[off:])
		if err != nil {
			t.Fatal(err)
		}
		off += n
		ends = append(ends, off)
	}
	if len(ends) != 3 {
		t.Fatalf("%d records, want 3", len(ends))
	}

	// Torn: the third record cut in the middle.
	os.WriteFile(jPath, data[:ends[2]-3], 0600)
	e = open(t, dir)
	e.attr("one")
	e.attr("two")
	e.absent("three")
	if e.log.FilterMessageSnippet("torn record").Len() != 1 {
		t.Errorf("no warning for the torn tail: %v", e.log.All())
	}
	e.s.Close()

	// Corrupt: a byte flipped in the second record of a fresh journal.
	os.WriteFile(jPath, data, 0600)
	os.Remove(filepath.Join(dir, snapshotName))
	bad := bytes.Clone(data)
	bad[ends[0]+frameHeader+2] ^= 0xff
	os.WriteFile(jPath, bad, 0600)
	e = open(t, dir)
	e.attr("one")
	e.absent("two") // the last good state is the one before the damage
	e.absent("three")
	if e.log.FilterMessageSnippet("journal is damaged").Len() != 1 {
		t.Errorf("no warning for the damage: %v", e.log.All())
	}
	if m, _ := filepath.Glob(jPath + ".damaged-*"); len(m) != 1 {
		t.Errorf("damaged journal kept as %q", m)
	}
	e.s.Close()

	// A damaged snapshot: Open fails and changes nothing.
	sPath := filepath.Join(dir, snapshotName)
	snap, _ := os.ReadFile(sPath)
	snap[len(snap)-2] ^= 0xff
	os.WriteFile(sPath, snap, 0600)
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "snapshot") {
		t.Fatalf("Open with a damaged snapshot: %v", err)
	}
	if after, _ := os.ReadFile(sPath); !bytes.Equal(after, snap) {
		t.Error("Open changed the damaged snapshot")
	}
}

// Two daemons cannot share a state directory.
func TestLocked(t *testing.T) {
	dir := t.TempDir()
	open(t, dir)
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open: %v", err)
	}
}

// Compaction: past CompactAt the journal is folded into the snapshot, and
// what was kept survives.
func TestCompaction(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{CompactAt: 512})
	if err != nil {
		t.Fatal(err)
	}
	ns := dcache.New(dcache.Options{Sink: s, RegisterHook: s.RegisterHook})
	s.Start()
	root := ns.Root()
	for i := 0; i < 50; i++ {
		root.Mknod(strings.Repeat("n", 1+i%7)+string(rune('a'+i%26))+string(rune('a'+i/26)), 0o10600, 0, 0, user)
		if err := s.WaitDurable(context.Background(), ns.LastSeq()); err != nil {
			t.Fatal(err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, journalName)); fi.Size() >= 1024 {
		t.Errorf("journal %d bytes: not compacted", fi.Size())
	}
	s.Close()
	e := open(t, dir)
	if got := len(e.s.Entries()); got != 50 {
		t.Errorf("%d entries after compactions, want 50", got)
	}
}

// Concurrent changes share fsyncs (group commit), and every one is durable
// when WaitDurable returns.
func TestGroupCommit(t *testing.T) {
	e := open(t, t.TempDir())
	root := e.ns.Root()
	var wg sync.WaitGroup
	const workers, each = 8, 25
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				name := string(rune('a'+w)) + "-" + strings.Repeat("x", i+1)
				if _, err := root.Mknod(name, 0o10600, 0, 0, user); err != nil {
					t.Error(err)
					return
				}
				if err := e.s.WaitDurable(context.Background(), e.ns.LastSeq()); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	st := e.s.Stats()
	t.Logf("%d changes in %d commits (%v in write+fsync)", workers*each, st.Commits, st.SyncTotal)
	if st.Commits > workers*each {
		t.Errorf("%d commits for %d changes", st.Commits, workers*each)
	}
	e = e.reopen()
	if got := len(e.s.Entries()); got != workers*each {
		t.Errorf("%d entries kept, want %d", got, workers*each)
	}
}

// Changes queued while a commit cannot start are written by one commit,
// one fsync: the sharing TestGroupCommit can only hope for, made certain
// by queueing before the committer starts.
func TestGroupCommitSharesOneFsync(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ns := dcache.New(dcache.Options{Sink: s, RegisterHook: s.RegisterHook})
	const n = 20
	for i := 0; i < n; i++ {
		if _, err := ns.Root().Mknod("q"+strings.Repeat("x", i+1), 0o10600, 0, 0, user); err != nil {
			t.Fatal(err)
		}
	}
	s.Start()
	if err := s.WaitDurable(context.Background(), ns.LastSeq()); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Commits != 1 || st.Entries != n {
		t.Errorf("%d changes queued before Start: %d commits, %d entries; want 1 commit, %d entries",
			n, st.Commits, st.Entries, n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// The snapshot and journal are the documented frames of JSON.
func TestFormat(t *testing.T) {
	dir := t.TempDir()
	e := open(t, dir)
	e.ns.Root().Symlink("l", "target", user)
	e.sync()
	data, _ := os.ReadFile(filepath.Join(dir, journalName))
	payload, n, err := nextFrame(data)
	if err != nil || n != len(data) {
		t.Fatalf("journal: %v, %d of %d bytes", err, n, len(data))
	}
	var rec record
	if err := json.Unmarshal(payload, &rec); err != nil || rec.N != 1 || len(rec.Ops) != 1 ||
		rec.Ops[0].Op != "put" || rec.Ops[0].Entry.Target != "target" || !rec.Ops[0].Entry.Created {
		t.Fatalf("record %s: %v", payload, err)
	}
}

// BenchmarkCommit measures one change made durable: the mknod, its event,
// the committer's write and fsync, and the wait. With -cpu 2 and
// RunParallel, concurrent changes share fsyncs.
func BenchmarkCommit(b *testing.B) {
	s, err := Open(b.TempDir(), Options{CompactAt: 64 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ns := dcache.New(dcache.Options{Sink: s, MaxNodes: 1 << 24})
	s.Start()
	root := ns.Root()
	n, _ := root.Mknod("dev", 0o20600, 1, 3, user)
	var i int64
	var mu sync.Mutex
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			i++
			mode := uint32(i % 0777)
			mu.Unlock()
			n.SetAttr(dcache.SetAttrIn{Valid: dcache.SetMode, Mode: mode}, user)
			if err := s.WaitDurable(context.Background(), ns.LastSeq()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(st.Commits)/float64(b.N), "fsyncs/op")
}
