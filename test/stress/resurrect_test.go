package stress

// A removed entry stays removed (issue 4; DESIGN.md section 7: "a lookup
// racing an unlink must never bring a removed entry back").
//
// Setup: devfsd with entry, attribute and negative timeouts 0, so every
// access is a request the daemon answers. Each name (a slot) has exactly
// one owner process, the only one that ever creates or removes it; a
// cycle of the owner is
//
//	seq++ (odd: the name may exist)
//	mknod(name) (a char device) or, every third cycle of a slot, mkdir(name)
//	lstat(name) -> ino X (the incarnation)
//	unlink(name) or rmdir(name), which returns success
//	dead = X; seq++ (even: the name is absent until the next cycle begins)
//	lstat(name) -> must fail with ENOENT
//
// while observer processes stat every name and list the directory as fast
// as they can. seq and dead live in a shared-memory file (outside the
// mount), written only by the owner with atomic stores.
//
// Resurrection. An observation is a resurrection when its whole interval
// lies in a window where the name is known to be removed and not yet
// re-created, yet the mount shows it; precisely, one of:
//
//  1. lstat(name) succeeded although seq was the same even number before
//     the call and after it returned: unlink/rmdir had returned success and
//     the next mknod/mkdir had not begun during the whole call;
//  2. lstat(name) succeeded with an ino that belongs to an incarnation of
//     name whose unlink/rmdir had returned before the call began (the
//     value of dead read before the call, or any ino the observer saw
//     published as dead earlier): a removed node came back, whether or not
//     the name exists again by now;
//  3. a listing (open, getdents to the end, close) contains name although
//     seq was the same even number before the open and after the close,
//     or contains it with the d_ino of an incarnation dead before the open;
//  4. the owner's own lstat right after its unlink returned succeeded (a
//     case of 1), or its mknod/mkdir of a name it removed failed EEXIST.
//
// An observation that overlaps an owner's change is not judged: the
// system call may be ordered before or after it. Any errno other than
// ENOENT for an observer's lstat, and any failure of an owner's change, is
// an error of its own (the test fails on it too).

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// Shared memory layout: a header line, then one 64-byte line per slot.
const (
	shmLine      = 64
	hdrOwnerDone = 0 // owners finished
	hdrCycles    = 8 // cycles done by all owners (progress)
	slotSeq      = 0
	slotDead     = 8
)

// shm is the mapped shared-memory file.
type shm []byte

func openShm(path string, slots int, create bool) (shm, error) {
	size := shmLine * (slots + 1)
	flags := os.O_RDWR
	if create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if create {
		if err := f.Truncate(int64(size)); err != nil {
			return nil, err
		}
	}
	b, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, err
	}
	return shm(b), nil
}

// word returns the 8-aligned word at off (the mapping is page-aligned).
func (m shm) word(off int) *atomic.Uint64 {
	return (*atomic.Uint64)(unsafe.Pointer(&m[off]))
}

func (m shm) hdr(off int) *atomic.Uint64 { return m.word(off) }

func (m shm) slot(k, off int) *atomic.Uint64 { return m.word(shmLine*(k+1) + off) }

func slotName(k int) string { return fmt.Sprintf("r%03d", k) }

// slotIsDir: every third cycle of a slot makes a directory, so that a name
// also changes type between incarnations.
func slotIsDir(cycle, slotsPerOwner int) bool { return (cycle/slotsPerOwner)%3 == 2 }

func TestRemovedEntryStaysRemoved(t *testing.T) {
	owners, observers := *flagOwners, *flagObservers
	if owners < 1 || *flagCycles < owners {
		t.Fatalf("-stress.owners=%d -stress.cycles=%d: need at least one cycle per owner", owners, *flagCycles)
	}
	const slotsPerOwner = 4
	slots := owners * slotsPerOwner
	m, c, _ := mountDevfsd(t, harness.Options{Timeouts: true})
	dir := "race"
	if err := unix.Mkdir(inMount(m, dir), 0o755); err != nil {
		t.Fatal(err)
	}
	shmPath := filepath.Join(t.TempDir(), "shm")
	mem, err := openShm(shmPath, slots, true)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)

	start := time.Now()
	base := workerConfig{Mount: m.Dir, Dir: dir, Shm: shmPath, Owners: owners, SlotsPerOwner: slotsPerOwner}
	var ows, obs []*worker
	for i := 0; i < observers; i++ {
		cfg := base
		cfg.Index = i
		obs = append(obs, startWorker(t, "observer", cfg))
	}
	for i := 0; i < owners; i++ {
		cfg := base
		cfg.Index = i
		cfg.Cycles = *flagCycles / owners
		if i < *flagCycles%owners {
			cfg.Cycles++
		}
		ows = append(ows, startWorker(t, "owner", cfg))
	}
	waitWorkers(t, *flagBudget, append(ows, obs...)...)
	elapsed := time.Since(start)

	var cycles, lookups, readdirs, res int
	for _, w := range append(ows, obs...) {
		s, err := w.summary()
		if err != nil {
			t.Error(err)
			continue
		}
		cycles += s.Cycles
		lookups += s.Lookups
		readdirs += s.Readdirs
		res += s.Resurrections
		if s.Resurrections > 0 || len(s.Errors) > 0 {
			t.Errorf("%s: %d resurrections, errors %v; first ones:\n  %s", w.name, s.Resurrections, s.Errors, joinLines(s.Samples))
		}
		t.Logf("%s: cycles %d, lookups %d, listings %d, allowed errnos %v", w.name, s.Cycles, s.Lookups, s.Readdirs, s.Errnos)
	}
	t.Logf("%d cycles (%d owners), %d checked lookups and %d checked listings (%d observers) in %v: %d resurrections",
		cycles, owners, lookups, readdirs, observers, elapsed.Round(time.Millisecond), res)
	if cycles != *flagCycles {
		t.Errorf("%d cycles done, want %d", cycles, *flagCycles)
	}
	if res != 0 {
		t.Errorf("%d resurrections, want 0", res)
	}
	checkDaemonHealthy(t, m, c)
}

func joinLines(s []string) string {
	out := ""
	for i, l := range s {
		if i > 0 {
			out += "\n  "
		}
		out += l
	}
	return out
}

// ownerMain creates and removes its slots, cfg.Cycles times in all.
func ownerMain(cfg workerConfig) *summary {
	s := &summary{}
	mem, err := openShm(cfg.Shm, cfg.Owners*cfg.SlotsPerOwner, false)
	if err != nil {
		s.errno(false, "open shm", err)
		return s
	}
	defer func() { mem.hdr(hdrOwnerDone).Add(1) }()
	dir := filepath.Join(cfg.Mount, cfg.Dir)
	for c := 0; c < cfg.Cycles; c++ {
		k := cfg.Index*cfg.SlotsPerOwner + c%cfg.SlotsPerOwner
		name := slotName(k)
		p := filepath.Join(dir, name)
		isDir := slotIsDir(c, cfg.SlotsPerOwner)
		seq, dead := mem.slot(k, slotSeq), mem.slot(k, slotDead)

		seq.Add(1) // odd: changing
		var err error
		if isDir {
			err = unix.Mkdir(p, 0o755)
		} else {
			err = unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3)))
		}
		if err != nil {
			if err == unix.EEXIST {
				s.Resurrections++
				s.sample("cycle %d: create %s failed EEXIST after its unlink had returned (last dead ino %d)", c, name, dead.Load())
			} else {
				s.errno(false, "create", err)
			}
			return s
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			s.errno(false, "lstat after create", err)
			return s
		}
		ino := st.Ino
		if isDir {
			err = unix.Rmdir(p)
		} else {
			err = unix.Unlink(p)
		}
		if err != nil {
			s.errno(false, "remove", err)
			return s
		}
		dead.Store(ino)
		seq.Add(1) // even: absent
		s.Cycles++
		mem.hdr(hdrCycles).Add(1)
		progress.Add(1)

		s.Lookups++
		if err := unix.Lstat(p, &st); err == nil {
			s.Resurrections++
			s.sample("cycle %d: owner's lstat of %s right after its removal returned succeeded: ino %d (removed ino %d)", c, name, st.Ino, ino)
		} else if err != unix.ENOENT {
			s.errno(false, "lstat after remove", err)
		}
		if c%16 == 15 {
			checkListing(s, mem, dir, cfg.Owners*cfg.SlotsPerOwner, nil)
		}
	}
	return s
}

// observerMain looks the names up and lists their directory until every
// owner is done.
func observerMain(cfg workerConfig) *summary {
	s := &summary{}
	slots := cfg.Owners * cfg.SlotsPerOwner
	mem, err := openShm(cfg.Shm, slots, false)
	if err != nil {
		s.errno(false, "open shm", err)
		return s
	}
	dir := filepath.Join(cfg.Mount, cfg.Dir)
	paths := make([]string, slots)
	for k := range paths {
		paths[k] = filepath.Join(dir, slotName(k))
	}
	// seenDead[k] holds every ino this observer read as dead for slot k.
	seenDead := make([]map[uint64]bool, slots)
	for k := range seenDead {
		seenDead[k] = map[uint64]bool{}
	}
	rng := rand.New(rand.NewPCG(uint64(cfg.Index), uint64(os.Getpid())))
	for i := 0; mem.hdr(hdrOwnerDone).Load() < uint64(cfg.Owners); i++ {
		if i%64 == 63 {
			checkListing(s, mem, dir, slots, seenDead)
			continue
		}
		k := rng.IntN(slots)
		seq, dead := mem.slot(k, slotSeq), mem.slot(k, slotDead)
		s1 := seq.Load()
		d := dead.Load()
		if d != 0 {
			seenDead[k][d] = true
		}
		var st unix.Stat_t
		err := unix.Lstat(paths[k], &st)
		s2 := seq.Load()
		s.Lookups++
		progress.Add(1)
		switch {
		case err == unix.ENOENT:
			s.errno(true, "lstat", err)
		case err != nil:
			s.errno(false, "lstat", err)
		case seenDead[k][st.Ino]:
			s.Resurrections++
			s.sample("lstat %s: ino %d, an incarnation removed before the call (last dead %d, seq %d..%d)", slotName(k), st.Ino, d, s1, s2)
		case s1 == s2 && s1%2 == 0:
			s.Resurrections++
			s.sample("lstat %s: exists (ino %d) while removed for the whole call (seq %d, last dead %d)", slotName(k), st.Ino, s1, d)
		}
	}
	return s
}

// checkListing lists dir once and judges every slot name in it (cases 3
// of the definition). seenDead, if not nil, is the caller's set of dead
// inos per slot, updated here.
func checkListing(s *summary, mem shm, dir string, slots int, seenDead []map[uint64]bool) {
	before := make([]uint64, slots)
	deadBefore := make([]uint64, slots)
	for k := range before {
		before[k] = mem.slot(k, slotSeq).Load()
		deadBefore[k] = mem.slot(k, slotDead).Load()
		if seenDead != nil && deadBefore[k] != 0 {
			seenDead[k][deadBefore[k]] = true
		}
	}
	ents, err := listDir(dir)
	s.Readdirs++
	progress.Add(1)
	if err != nil {
		s.errno(false, "readdir", err)
		return
	}
	index := map[string]int{}
	for k := 0; k < slots; k++ {
		index[slotName(k)] = k
	}
	for _, e := range ents {
		k, ok := index[e.name]
		if !ok {
			continue
		}
		after := mem.slot(k, slotSeq).Load()
		stale := e.ino == deadBefore[k] || (seenDead != nil && seenDead[k][e.ino])
		switch {
		case stale:
			s.Resurrections++
			s.sample("listing: %s with ino %d, an incarnation removed before the open (seq %d..%d)", e.name, e.ino, before[k], after)
		case before[k] == after && after%2 == 0:
			s.Resurrections++
			s.sample("listing: %s (ino %d) while removed for the whole listing (seq %d)", e.name, e.ino, after)
		}
	}
}

type dirent struct {
	name string
	ino  uint64
}

// listDir lists dir with getdents64 to the end, keeping d_ino.
func listDir(dir string) ([]dirent, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	var out []dirent
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		for off := 0; off < n; {
			d := (*unix.Dirent)(unsafe.Pointer(&buf[off]))
			nameBytes := (*[256]byte)(unsafe.Pointer(&d.Name[0]))
			l := 0
			for l < len(nameBytes) && nameBytes[l] != 0 {
				l++
			}
			out = append(out, dirent{name: string(nameBytes[:l]), ino: d.Ino})
			off += int(d.Reclen)
		}
	}
}
