package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
)

// File names in the state directory.
const (
	snapshotName = "snapshot"
	journalName  = "journal"
	lockName     = "lock"
)

// DefaultCompactAt is the journal size past which the committer writes a
// snapshot and starts an empty journal.
const DefaultCompactAt = 1 << 20

// Options configures Open.
type Options struct {
	// CompactAt: the journal size in bytes that triggers a snapshot.
	// Default DefaultCompactAt.
	CompactAt int64
	// Logger; nil: none.
	Logger *zap.Logger
}

// Store is the state directory of one daemon. Make it with Open, pass
// RegisterHook and Event to the namespace (dcache.Options.RegisterHook, and
// as a sink), Restore, Start; WaitDurable before acknowledging a change;
// Close at exit.
type Store struct {
	// Immutable after Open:
	dir       string
	log       *zap.Logger
	compactAt int64
	lock      *os.File

	mu sync.Mutex // the model; a leaf
	// Guarded by mu:
	fold   folder
	useIDs bool            // UseKeptIDs was called
	given  map[uint64]bool // kept inode numbers given to a node since

	// The sink's own state: Event is called one call at a time (dcache
	// hands delivery from goroutine to goroutine under its queue lock).
	hold    []dcache.Event
	holding map[uint64]int // Renamed DELETEs awaiting their CREATE, by inode

	qmu sync.Mutex // a leaf
	// Guarded by qmu:
	queue      []dcache.Event // events that change the model, not yet taken
	seen       uint64         // seq of the last event the sink passed on
	committing bool           // the committer took events and has not synced them
	durable    uint64         // every event up to here is on disk
	failed     error          // the journal cannot be written: nothing is durable
	progress   chan struct{}  // closed and replaced when durable or seen moves
	waiters    int
	stopped    bool
	want       reservation // what Reserve asked for (the largest ceiling, the latest gen)
	wantSeq    uint64      // Reserve calls so far
	reserved   uint64      // the Reserve calls whose reservation is on disk

	wake chan struct{} // capacity 1

	// The committer's (and Open's) own:
	journal     *os.File
	journalSize int64
	n           uint64 // last journal record number

	done    chan struct{} // closed when the committer returns
	started atomic.Bool

	commits    atomic.Uint64
	syncNanos  atomic.Uint64
	recordsOut atomic.Uint64
}

// IDs returns the kept inode generation and id ceiling (Reserve), 0 for
// what was never kept.
func (s *Store) IDs() (gen, ceiling uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fold.gen, s.fold.ceiling
}

// reservation is what Reserve keeps: the inode generation, and the id
// ceiling below which every node id handed out lies.
type reservation struct {
	Gen     uint64
	Ceiling uint64
}

// newMeta returns what of r is not kept yet. Preconditions: Store.mu held.
func (f *folder) newMeta(r reservation) reservation {
	var m reservation
	if r.Gen != 0 && r.Gen != f.gen {
		m.Gen = r.Gen
	}
	if r.Ceiling > f.ceiling {
		m.Ceiling = r.Ceiling
	}
	return m
}

// setMeta applies a kept reservation. Preconditions: Store.mu held.
func (f *folder) setMeta(m reservation) {
	if m.Gen != 0 {
		f.gen = m.Gen
	}
	f.ceiling = max(f.ceiling, m.Ceiling)
}

// Reserve keeps gen as the inode generation and raises the id ceiling to
// ceiling (a lower one changes nothing): it returns once both are on disk
// (fsynced), so the caller may then hand out ids below ceiling knowing
// that a successor started from this directory will not hand them out
// again. Before Start it writes the record itself; after, the committer
// writes it with the next group. It fails if the journal cannot be
// written, or ctx ends first. Not concurrently with Start.
func (s *Store) Reserve(ctx context.Context, gen, ceiling uint64) error {
	r := reservation{Gen: gen, Ceiling: ceiling}
	if !s.started.Load() {
		s.mu.Lock()
		meta := s.fold.newMeta(r)
		s.mu.Unlock()
		if meta == (reservation{}) {
			return nil
		}
		if err := s.append(nil, meta); err != nil {
			return fmt.Errorf("state: keeping the id ceiling: %w", err)
		}
		return nil
	}
	s.qmu.Lock()
	if gen != 0 {
		s.want.Gen = gen
	}
	s.want.Ceiling = max(s.want.Ceiling, ceiling)
	s.wantSeq++
	seq := s.wantSeq
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.waitLocked(ctx, func() (bool, error) {
		switch {
		case s.failed != nil:
			return true, s.failed
		case s.reserved >= seq:
			return true, nil
		case s.stopped:
			return true, ErrClosed
		}
		return false, nil
	})
}

// Stats counts the store's work.
type Stats struct {
	Entries   int
	Commits   uint64        // journal records written (each one fsync)
	Ops       uint64        // model changes journaled
	SyncTotal time.Duration // time spent writing and fsyncing records
	Failed    bool
}

// Open takes the state directory dir (made 0700 if missing), locks it,
// reads the snapshot and replays the journal. A torn journal tail is
// dropped and a corrupt record ends the replay, both with a warning (see
// the package doc); a damaged snapshot is an error.
func Open(dir string, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if opts.CompactAt <= 0 {
		opts.CompactAt = DefaultCompactAt
	}
	if err := os.MkdirAll(dir, 0700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0600)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("state: %s is in use by another devfsd", dir)
		}
		return nil, fmt.Errorf("state: locking %s: %w", dir, err)
	}
	s := &Store{dir: dir, log: log, compactAt: opts.CompactAt, lock: lock,
		fold: folder{m: model{}}, progress: make(chan struct{}), wake: make(chan struct{}, 1),
		done: make(chan struct{})}
	if err := s.recover(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// recover reads the snapshot and the journal, then writes a fresh snapshot
// and an empty journal.
func (s *Store) recover() error {
	snapPath := filepath.Join(s.dir, snapshotName)
	data, err := os.ReadFile(snapPath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("state: %w", err)
	default:
		payload, n, ferr := nextFrame(data)
		var snap snapshotFile
		if ferr == nil && n != len(data) {
			ferr = errors.New("trailing data")
		}
		if ferr == nil {
			ferr = json.Unmarshal(payload, &snap)
		}
		if ferr == nil && (snap.Version < 1 || snap.Version > snapshotVersion) {
			ferr = fmt.Errorf("version %d, want 1 to %d", snap.Version, snapshotVersion)
		}
		if ferr == nil {
			for _, e := range snap.Entries {
				if ferr = e.validate(); ferr != nil {
					break
				}
			}
		}
		if ferr != nil {
			return fmt.Errorf("state: the snapshot %s is damaged (%v); not starting, so that nothing kept is lost: move it aside to start without the kept state", snapPath, ferr)
		}
		for _, e := range snap.Entries {
			s.fold.m[e.Path] = e
		}
		s.n = snap.N
		s.fold.gen, s.fold.ceiling = snap.Gen, snap.Ceiling
	}
	jPath := filepath.Join(s.dir, journalName)
	data, err = os.ReadFile(jPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("state: %w", err)
	}
	off, replayed, skipped := 0, 0, 0
	var damage error
	for off < len(data) {
		payload, n, ferr := nextFrame(data[off:])
		var rec record
		if ferr == nil {
			if jerr := json.Unmarshal(payload, &rec); jerr != nil {
				ferr = fmt.Errorf("%w: %v", errCorrupt, jerr)
			}
		}
		if ferr == nil {
			for _, o := range rec.Ops {
				if o.Op == "put" && (o.Entry == nil || o.Entry.validate() != nil) || o.Op != "put" && o.Op != "del" && o.Op != "rm" {
					ferr = fmt.Errorf("%w: a bad op in record %d", errCorrupt, rec.N)
					break
				}
			}
		}
		if ferr != nil {
			damage = fmt.Errorf("at offset %d: %w", off, ferr)
			break
		}
		off += n
		if rec.N <= s.n {
			skipped++
			continue // in the snapshot already
		}
		for _, o := range rec.Ops {
			s.fold.m.apply(o)
		}
		if rec.Gen != 0 {
			s.fold.gen = rec.Gen
		}
		s.fold.ceiling = max(s.fold.ceiling, rec.Ceiling)
		s.n = rec.N
		replayed++
	}
	switch {
	case damage != nil && errors.Is(damage, errTorn):
		s.log.Warn("state: the journal ends in a torn record (a crash during a write, never acknowledged); dropped it",
			zap.String("journal", jPath), zap.Int("records_used", replayed), zap.Int("bytes_dropped", len(data)-off))
	case damage != nil:
		aside := fmt.Sprintf("%s.damaged-%d", jPath, time.Now().UnixNano())
		if err := os.Rename(jPath, aside); err != nil {
			return fmt.Errorf("state: the journal is damaged (%v) and cannot be moved aside: %w", damage, err)
		}
		s.log.Warn("state: the journal is damaged; using the last good state and keeping the journal for inspection",
			zap.String("journal", jPath), zap.Error(damage), zap.Int("records_used", replayed),
			zap.String("kept_as", aside))
	}
	if replayed > 0 || skipped > 0 || damage != nil {
		s.log.Info("state: replayed the journal", zap.Int("records", replayed), zap.Int("entries", len(s.fold.m)))
	}
	f, err := os.OpenFile(jPath, os.O_RDWR|os.O_CREATE, 0600)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	s.journal = f
	if err := s.compact(); err != nil {
		f.Close()
		return err
	}
	return nil
}

// compact writes the model as a snapshot, then empties the journal.
// Called by Open and by the committer only.
func (s *Store) compact() error {
	s.mu.Lock()
	snap := snapshotFile{Version: snapshotVersion, N: s.n, Entries: s.fold.m.sorted(),
		Gen: s.fold.gen, Ceiling: s.fold.ceiling}
	payload, err := json.Marshal(snap)
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := writeAtomic(s.dir, snapshotName, appendFrame(nil, payload)); err != nil {
		return fmt.Errorf("state: writing the snapshot: %w", err)
	}
	if err := s.journal.Truncate(0); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if _, err := s.journal.Seek(0, 0); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := s.journal.Sync(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	s.journalSize = 0
	return nil
}

// writeAtomic writes data to dir/name: a temporary file, fsync, rename,
// fsync of the directory.
func writeAtomic(dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, name))
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Entries returns a copy of the kept entries, by path.
func (s *Store) Entries() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Entry
	for _, e := range s.fold.m.sorted() {
		out = append(out, *e)
	}
	return out
}

// RegisterHook is the namespace's dcache.Options.RegisterHook: a node that
// registers where a changed entry of the same type (and device number)
// is kept gets the kept mode and owner, and the kept times if a user set
// them; after UseKeptIDs, a node that registers where any entry of the
// same type (and device number) is kept gets the kept inode number. It
// takes only mu, a leaf.
func (s *Store) RegisterHook(path string, spec dcache.Spec) dcache.Spec {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.fold.m[path]
	if e == nil || e.Type != spec.Type.String() ||
		(spec.Type.Device()) && (e.Major != spec.Major || e.Minor != spec.Minor) {
		return spec
	}
	if spec.Ino == 0 {
		spec.Ino = s.keptInoLocked(e)
	}
	if e.Created || e.Registered {
		return spec
	}
	spec.Mode, spec.Uid, spec.Gid = e.Mode, e.Uid, e.Gid
	if e.Times {
		spec.Atime, spec.Mtime = timeOf(e.Atime), timeOf(e.Mtime)
	}
	return spec
}

// UseKeptIDs makes Restore and RegisterHook give nodes their kept inode
// numbers: call it before Restore when the daemon serves again a mount
// whose kernel holds them (the kept generation is the store's). Without
// it nodes get new numbers, as a new mount needs.
func (s *Store) UseKeptIDs() {
	s.mu.Lock()
	s.useIDs = true
	s.mu.Unlock()
}

// keptInoLocked returns e's kept inode number if kept numbers are in use
// and no other node was given it (two hard links are kept as two entries
// with one number: the second gets a new one), else 0. Preconditions:
// mu held.
func (s *Store) keptInoLocked(e *Entry) uint64 {
	if !s.useIDs || e.Ino == 0 || e.Ino == 1 || s.given[e.Ino] {
		return 0
	}
	if s.given == nil {
		s.given = map[uint64]bool{}
	}
	s.given[e.Ino] = true
	return e.Ino
}

// Restore recreates the kept created entries in ns (directories before
// what is in them), with their kept inode numbers after UseKeptIDs, and
// applies a kept change of the root. Call it before
// the mount is live, with the Store already the namespace's sink (the
// REGISTER events it causes change nothing kept). A node that cannot be
// made is logged and stays kept.
func (s *Store) Restore(ns *dcache.Namespace) (restored int) {
	c := dcache.Caller{Origin: dcache.OriginBuiltin}
	for _, e := range s.Entries() {
		if e.Path == "" && !e.Created {
			in := dcache.SetAttrIn{Valid: dcache.SetMode | dcache.SetUid | dcache.SetGid,
				Mode: e.Mode, Uid: e.Uid, Gid: e.Gid}
			if e.Times {
				in.Valid |= dcache.SetAtime | dcache.SetMtime
				in.Atime, in.Mtime = timeOf(e.Atime), timeOf(e.Mtime)
			}
			ns.Root().SetAttr(in, c)
			continue
		}
		if !e.Created {
			continue
		}
		t, _ := dcache.ParseType(e.Type) // validated when read
		spec := dcache.Spec{Type: t, Mode: e.Mode, Uid: e.Uid, Gid: e.Gid,
			Major: e.Major, Minor: e.Minor, Target: e.Target, Atime: timeOf(e.Atime), Mtime: timeOf(e.Mtime)}
		s.mu.Lock()
		spec.Ino = s.keptInoLocked(&e)
		s.mu.Unlock()
		if _, err := ns.Register(e.Path, spec, c); err != nil {
			s.log.Warn("state: a kept node could not be restored; it stays kept", zap.String("path", e.Path), zap.Error(err))
			continue
		}
		restored++
	}
	return restored
}

// WantsLookups implements dcache.LookupSink: a LOOKUP changes nothing to
// keep, so the store has no use for it.
func (s *Store) WantsLookups() bool { return false }

// Event implements dcache.Sink. It only queues: events that change the
// model go to the committer, the others only advance what has been seen.
// A Renamed DELETE is held until the CREATE of the same inode (which
// dcache queues adjacently), so that a move is journaled as one record.
func (s *Store) Event(ev dcache.Event) {
	if ev.Renamed {
		s.hold = append(s.hold, ev)
		if s.holding == nil {
			s.holding = make(map[uint64]int)
		}
		if ev.Kind == dcache.KindDelete {
			s.holding[ev.Ino]++
		} else if s.holding[ev.Ino]--; s.holding[ev.Ino] <= 0 {
			delete(s.holding, ev.Ino)
		}
		if len(s.holding) > 0 {
			return
		}
		evs := s.hold
		s.hold = nil
		s.publish(evs...)
		return
	}
	switch ev.Kind {
	case dcache.KindCreate, dcache.KindDelete, dcache.KindRegister, dcache.KindUnregister, dcache.KindChange, dcache.KindTouch:
		s.publish(ev)
	default:
		s.qmu.Lock()
		s.seen = ev.Seq
		if s.waiters > 0 {
			s.advanceLocked()
		}
		s.qmu.Unlock()
	}
}

func (s *Store) publish(evs ...dcache.Event) {
	s.qmu.Lock()
	s.queue = append(s.queue, evs...)
	s.seen = evs[len(evs)-1].Seq
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// advanceLocked wakes the waiters. Preconditions: qmu held.
func (s *Store) advanceLocked() {
	close(s.progress)
	s.progress = make(chan struct{})
}

// ErrClosed is WaitDurable's error after Close.
var ErrClosed = errors.New("state: the store is closed")

// WaitDurable waits until every change the namespace queued an event for,
// up to seq (dcache.Namespace.LastSeq, read after the change returned), is
// on disk; or ctx ends. It fails if the journal cannot be written.
func (s *Store) WaitDurable(ctx context.Context, seq uint64) error {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	return s.waitLocked(ctx, func() (bool, error) {
		switch {
		case s.failed != nil:
			return true, s.failed
		case s.durable >= seq:
			return true, nil
		case seq <= s.seen && len(s.queue) == 0 && !s.committing:
			return true, nil // nothing up to seq needed writing
		case s.stopped:
			return true, ErrClosed
		}
		return false, nil
	})
}

// waitLocked waits until done reports true, returning its error, or until
// ctx ends. done is called with s.qmu held, each time the committer
// moves (s.progress). Preconditions: s.qmu held; it is held again on
// return.
func (s *Store) waitLocked(ctx context.Context, done func() (bool, error)) error {
	for {
		if ok, err := done(); ok {
			return err
		}
		ch := s.progress
		s.waiters++
		s.qmu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		}
		s.qmu.Lock()
		s.waiters--
		if err != nil {
			return err
		}
	}
}

// Start starts the committer. Events queued before (Restore's, the base
// set's) are written by its first commit.
func (s *Store) Start() {
	if s.started.CompareAndSwap(false, true) {
		go s.run()
	}
}

// run is the committer: it takes every queued event, folds them into the
// model, appends the changes as one record, fsyncs once, and marks them
// durable.
func (s *Store) run() {
	defer close(s.done)
	var ops []op
	for {
		<-s.wake
		s.qmu.Lock()
		batch, upTo, stop := s.queue, s.seen, s.stopped
		res, resSeq := s.want, s.wantSeq
		s.queue = nil
		s.committing = len(batch) > 0
		s.qmu.Unlock()
		ops = ops[:0]
		if len(batch) > 0 {
			s.mu.Lock()
			for i := range batch {
				ops = s.fold.fold(&batch[i], ops)
			}
			s.fold.endGroup()
			s.mu.Unlock()
		}
		var err error
		s.mu.Lock()
		meta := s.fold.newMeta(res)
		s.mu.Unlock()
		if len(ops) > 0 || meta != (reservation{}) {
			err = s.append(ops, meta)
		}
		s.qmu.Lock()
		if err == nil && resSeq > s.reserved {
			s.reserved = resSeq
		}
		s.committing = false
		if err != nil && s.failed == nil {
			s.failed = fmt.Errorf("state: the journal cannot be written, changes are not kept: %w", err)
			s.log.Error("state: journal write failed; changes from now on fail with EIO", zap.Error(err))
		}
		if err == nil && upTo > s.durable {
			s.durable = upTo
		}
		s.advanceLocked()
		more := len(s.queue) > 0
		s.qmu.Unlock()
		if stop && !more {
			return
		}
		if err == nil && s.journalSize >= s.compactAt {
			if err := s.compact(); err != nil {
				s.log.Warn("state: compaction failed; the journal keeps growing", zap.Error(err))
			}
		}
		if more {
			select {
			case s.wake <- struct{}{}:
			default:
			}
		}
	}
}

// append writes one record and fsyncs; meta's non-zero fields are the
// record's Gen and Ceiling, applied to the model once on disk.
func (s *Store) append(ops []op, meta reservation) error {
	start := time.Now()
	payload, err := json.Marshal(record{N: s.n + 1, Ops: ops, Gen: meta.Gen, Ceiling: meta.Ceiling})
	if err != nil {
		return err
	}
	frame := appendFrame(make([]byte, 0, len(payload)+frameHeader), payload)
	if _, err := s.journal.Write(frame); err != nil {
		// A short write leaves a torn tail; cut it so that the next
		// record follows the last good one.
		s.journal.Truncate(s.journalSize)
		s.journal.Seek(s.journalSize, 0)
		return err
	}
	if err := s.journal.Sync(); err != nil {
		return err
	}
	s.n++
	s.journalSize += int64(len(frame))
	if meta != (reservation{}) {
		s.mu.Lock()
		s.fold.setMeta(meta)
		s.mu.Unlock()
	}
	d := time.Since(start)
	s.commits.Add(1)
	s.recordsOut.Add(uint64(len(ops)))
	s.syncNanos.Add(uint64(d))
	return nil
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	n := len(s.fold.m)
	s.mu.Unlock()
	s.qmu.Lock()
	failed := s.failed != nil
	s.qmu.Unlock()
	return Stats{Entries: n, Commits: s.commits.Load(), Ops: s.recordsOut.Load(),
		SyncTotal: time.Duration(s.syncNanos.Load()), Failed: failed}
}

// Close stops the committer after it has written what was queued, and
// releases the directory. Call it once, after the namespace stopped
// changing (the mount is down).
func (s *Store) Close() error {
	s.qmu.Lock()
	s.stopped = true
	s.advanceLocked()
	s.qmu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	if s.started.Load() {
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			return errors.New("state: the committer did not stop")
		}
	}
	err := s.journal.Close()
	s.lock.Close()
	return err
}
