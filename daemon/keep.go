package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/moby/sys/mountinfo"
	"go.uber.org/zap"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/state"
)

// Keeping the mounts across a crash (DESIGN.md section 9).
//
// With a descriptor store (NOTIFY_SOCKET: systemd with
// FileDescriptorStoreMax=, or `devfsd keeper`), every mount's /dev/fuse
// descriptor is stored once it is live, with a memfd holding a state.Kept:
// the inode generation, the id ceiling, and each mount's mountpoint,
// device number, INIT and (for a view) its definition. A daemon started
// with those descriptors (LISTEN_FDS) serves the mounts it finds there
// and still mounted instead of mounting again; callers of the old one
// waited in the kernel, and what it had read and not answered is resent
// (FUSE_NOTIFY_RESEND).
//
// Node ids. The kernel holds node ids (inode numbers) with their
// generation; a successor must never give one of them to another node
// (the kernel would take the node for the old one, or mark its inode bad:
// EIO). So:
//   - the generation is kept (the memfd; --state-dir too) and the
//     successor's namespace has it;
//   - every id the daemon hands out is below a ceiling that was written to
//     the memfd and to --state-dir (fsynced) before the mount served:
//     the successor starts its inode counter at that ceiling, so ids it
//     makes are new to the kernel;
//   - with --state-dir, every kept node (those users made, and every
//     registered node, directories made on the way included) keeps its
//     inode number (package state): the successor restores users' nodes
//     with them, and a device that registers again at the same path (same
//     type and device number) gets its number back. Without --state-dir
//     the base set registers again with new ids: a kernel that still
//     holds an old one answers ESTALE through it until it looks the name
//     up again (at most the entry timeout), and what users made is lost;
//     the daemon logs it.
// The ceiling is raised (a new reservation written first) when the inode
// counter nears it, so ids never pass a ceiling that is not written.

// ceilingWindow is how many ids one reservation covers; the ceiling is
// raised when fewer than half are left. 2^32 ids per start leave room for
// 2^32 starts.
const ceilingWindow = 1 << 32

// keptMount is a kept mount found at start, still mounted.
type keptMount struct {
	state.KeptMount
	server fs.MountState
	files  []*os.File // the connection's descriptor, then its specials'
	view   *wire.View // nil: the main mount
}

// close closes km's descriptors (the store keeps its own).
func (km *keptMount) close() {
	for _, f := range km.files {
		if f != nil {
			f.Close()
		}
	}
	km.files = nil
}

// keeping is the daemon's side of the descriptor store.
type keeping struct {
	log   *zap.Logger
	store *fdStore // nil: no store (NOTIFY_SOCKET unset)

	// Found at start (read-only after openKeeping):
	main  *keptMount            // the kept main mount, if resumable
	views map[string]*keptMount // kept views, by mountpoint
	gen   uint64                // the kept generation, if main is set
	floor uint64                // the kept ceiling, if main is set

	// Set by watchIDs, before the mount:
	ns         *dcache.Namespace
	stateStore *state.Store

	mu   sync.Mutex // guards below; a leaf
	file *state.KeptFile
	// stored: file is the memfd the store holds. A new memfd (a fresh
	// start, or the successor of a handover, whose predecessor's memfd
	// is still there) replaces the store's only once it lists a mount:
	// until then a crash leaves the predecessor's in the store.
	stored  bool
	kept    state.Kept
	ceiling atomic.Uint64
	raising atomic.Bool
}

// openKeeping takes the inherited descriptors (LISTEN_FDS) and finds
// which kept mounts can be served again: the kept memfd names them, and
// the mount table must still show each at its mountpoint with its device
// number. Descriptors of mounts that are gone are closed and removed from
// the store. mountpoint is the configured main mount: a kept main mount
// elsewhere is not resumed (nor its views).
func openKeeping(mountpoint string, log *zap.Logger) *keeping {
	k := &keeping{log: log, views: map[string]*keptMount{}}
	st, err := newFDStore()
	switch {
	case errors.Is(err, errNoStore):
		log.Info("no descriptor store (NOTIFY_SOCKET is not set): a crash of the daemon leaves its mounts dead until the next start clears them")
	case err != nil:
		log.Warn("the descriptor store cannot be used", zap.Error(err))
	default:
		k.store = st
	}
	in := takeInherited()
	for _, n := range in.dups {
		log.Warn("an inherited descriptor name came twice; the first was kept", zap.String("name", n))
	}
	defer func() {
		if rest := in.rest(); len(rest) > 0 {
			log.Warn("inherited descriptors not used (closed, and taken out of the store)", zap.Strings("names", rest))
			for _, n := range rest {
				k.remove(n)
			}
		}
	}()
	f := in.take(keptFDName)
	if f == nil {
		return k
	}
	kf, kept, err := state.ReadKeptFile(f)
	if err != nil {
		log.Warn("the kept memfd cannot be read; mounting afresh", zap.Error(err))
		f.Close()
		k.remove(keptFDName)
		return k
	}
	k.file = kf
	for i, m := range kept.Mounts {
		km := &keptMount{KeptMount: m, files: []*os.File{in.take(m.FD)}}
		var specials []*os.File
		for _, n := range m.Specials {
			specials = append(specials, in.take(n))
		}
		why := ""
		switch {
		case km.files[0] == nil:
			why = "its /dev/fuse descriptor was not given back"
		case json.Unmarshal(m.Server, &km.server) != nil || km.server.Mountpoint != m.Mountpoint ||
			len(km.server.Specials) != len(m.Specials):
			why = "its kept description is damaged"
		case i == 0 && m.View != nil, i > 0 && m.View == nil:
			why = "the kept record is inconsistent"
		case i == 0 && m.Mountpoint != mountpoint:
			why = "the main mount is configured elsewhere now (" + mountpoint + ")"
		case i > 0 && k.main == nil:
			why = "the main mount is not resumed"
		default:
			if ok, w := stillMounted(m.Mountpoint, m.Dev); !ok {
				why = w
			}
		}
		if why == "" && m.View != nil {
			var v wire.View
			if err := json.Unmarshal(m.View, &v); err != nil || v.Mountpoint != m.Mountpoint {
				why = "its view definition is damaged"
			} else {
				km.view = &v
			}
		}
		if why == "" && slices.Contains(specials, nil) {
			// A store that keeps no O_PATH descriptor (systemd before
			// 246, which polls every descriptor it stores, or a store
			// that refused them) did not give back a special mount's
			// root: the specials stay mounted, not detached one by one
			// at a clean stop but with the mount (its lazy unmount
			// takes them).
			log.Info("a kept mount's special mounts were not given back; they stay mounted, unmanaged",
				zap.String("mountpoint", m.Mountpoint), zap.Strings("specials", m.Specials))
			for _, f := range specials {
				if f != nil {
					f.Close()
				}
			}
			specials, km.server.Specials = nil, nil
		}
		km.files = append(km.files, specials...)
		if why != "" {
			log.Warn("a kept mount is not served again", zap.String("mountpoint", m.Mountpoint), zap.String("fd", m.FD), zap.String("why", why))
			km.close()
			k.remove(m.FD)
			for _, n := range m.Specials {
				k.remove(n)
			}
			continue
		}
		km.server.IDs = nil // after a crash the kernel's counts are unknown
		if i == 0 {
			k.main = km
		} else {
			k.views[m.Mountpoint] = km
		}
	}
	if k.main == nil {
		// Nothing resumed: the memfd starts over with the mounts made now.
		k.kept = state.Kept{}
		return k
	}
	k.gen, k.floor = kept.Generation, kept.Ceiling
	// The memfd goes on listing the mounts being served again from the
	// first write on (Run's id ceiling, before they are resumed): a crash
	// in between must leave them to the next start, not an empty record
	// that makes it drop their descriptors.
	k.kept = state.Kept{Generation: kept.Generation, Ceiling: kept.Ceiling}
	if !mutantKeptEmptyOnResume {
		k.kept.Mounts = append(k.kept.Mounts, k.main.KeptMount)
		for _, m := range kept.Mounts[1:] {
			if km, ok := k.views[m.Mountpoint]; ok {
				k.kept.Mounts = append(k.kept.Mounts, km.KeptMount)
			}
		}
	}
	k.stored = true
	log.Info("serving the kept mounts again", zap.String("mountpoint", k.main.Mountpoint),
		zap.Int("views", len(k.views)), zap.Uint64("generation", kept.Generation), zap.Uint64("id_ceiling", kept.Ceiling))
	return k
}

// fuseFDName is the FDNAME of the mount on mountpoint's /dev/fuse
// descriptor: the same for every process that serves the mount (a
// successor after an upgrade stores it again under the name the store
// already has it by, which the store takes as the same entry).
func fuseFDName(mountpoint string) string {
	h := sha256.Sum256([]byte(mountpoint))
	return fuseFDNameBase + hex.EncodeToString(h[:8])
}

// stillMounted reports whether the mount table shows a FUSE mount at dir
// with device number dev ("major:minor"), without touching the mount (its
// server is this process, not serving yet).
func stillMounted(dir, dev string) (bool, string) {
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) { return m.Mountpoint != dir, false })
	if err != nil {
		return false, "the mount table: " + err.Error()
	}
	for _, m := range ms {
		if isFUSE(m.FSType) && fmt.Sprintf("%d:%d", m.Major, m.Minor) == dev {
			return true, ""
		}
	}
	return false, "it is not mounted any more"
}

// mountDev returns the device number of the FUSE mount at dir, as the
// mount table says (the last one mounted there).
func mountDev(dir string) (string, error) {
	ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) { return m.Mountpoint != dir, false })
	if err != nil {
		return "", err
	}
	for i := len(ms) - 1; i >= 0; i-- {
		if isFUSE(ms[i].FSType) {
			return fmt.Sprintf("%d:%d", ms[i].Major, ms[i].Minor), nil
		}
	}
	return "", fmt.Errorf("no FUSE mount at %s in the mount table", dir)
}

// resuming reports whether the main mount is served again.
func (k *keeping) resuming() bool { return k.main != nil }

// ids decides the namespace's generation and inode floor, and whether
// the state directory's kept inode numbers are valid for the kept mount
// (kept under the same generation). Not resuming: a new generation (0:
// dcache picks), no floor, no kept numbers (a new mount holds no ids).
func (k *keeping) ids(store *state.Store) (gen, floor uint64, useKept bool) {
	if !k.resuming() {
		return 0, 0, false
	}
	gen, floor = k.gen, k.floor
	if store != nil {
		sgen, sceil := store.IDs()
		if sgen == gen {
			return gen, max(floor, sceil), true
		}
		k.log.Warn("the state directory's inode numbers belong to another mount (another generation); users' nodes are restored with new ones",
			zap.Uint64("kept_generation", gen), zap.Uint64("state_generation", sgen))
	} else {
		k.log.Warn("no state directory: what users made in the kept mount is lost, and the base set has new node ids (an old id answers ESTALE until the kernel looks its name up again)",
			zap.Uint64("ids_below", floor))
	}
	return gen, floor, false
}

// reserve writes a ceiling covering the next ceilingWindow ids above
// what ns has handed out, to the memfd and to store (fsynced), before any
// of them is handed out; from then on ids stay below it (watch).
func (k *keeping) reserve(ctx context.Context, ns *dcache.Namespace, store *state.Store) error {
	if k.store == nil {
		return nil // nothing keeps the mount: no successor will serve its ids
	}
	ceiling := ns.LastIno() + 1 + ceilingWindow
	k.mu.Lock()
	k.kept.Generation = ns.Root().Gen()
	k.mu.Unlock()
	return k.raise(ctx, ns.Root().Gen(), ceiling, store)
}

// raise makes ceiling the kept ceiling: the state directory's first (it
// is what the next start with a state directory trusts), then the
// memfd's.
func (k *keeping) raise(ctx context.Context, gen, ceiling uint64, store *state.Store) error {
	if store != nil {
		if err := store.Reserve(ctx, gen, ceiling); err != nil {
			return err
		}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if ceiling <= k.kept.Ceiling {
		return nil
	}
	k.kept.Ceiling = ceiling
	if err := k.writeLocked(); err != nil {
		return err
	}
	k.ceiling.Store(ceiling)
	return nil
}

// watch is an event sink peer: when an event shows an inode number within
// half a window of the ceiling, a goroutine raises it. Events come after
// the node was made, so this keeps ids below a written ceiling as long as
// fewer than half a window (2^31) of ids are made while one raise is
// written — a bound no namespace of MaxNodes reaches.
type ceilingWatch struct{ k *keeping }

func (w ceilingWatch) Event(ev dcache.Event) {
	k := w.k
	c := k.ceiling.Load()
	if c == 0 || ev.Ino+ceilingWindow/2 < c || !k.raising.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer k.raising.Store(false)
		if err := k.raise(context.Background(), k.ns.Root().Gen(), k.ns.LastIno()+1+ceilingWindow, k.stateStore); err != nil {
			k.log.Error("the id ceiling cannot be raised; a crash may now reuse ids the kernel holds", zap.Error(err))
		}
	}()
}

// watchIDs gives ceilingWatch its namespace and state store; called
// before the namespace's first event that matters (the watch does
// nothing before reserve).
func (k *keeping) watchIDs(ns *dcache.Namespace, store *state.Store) {
	k.ns, k.stateStore = ns, store
}

// writeLocked writes the memfd (made and stored on first use). Without a
// store there is nothing to keep it. Preconditions: mu held.
func (k *keeping) writeLocked() error {
	if k.store == nil {
		return nil
	}
	if k.file == nil {
		f, err := state.NewKeptFile()
		if err != nil {
			return err
		}
		k.file = f
	}
	if err := k.file.Write(k.kept); err != nil {
		return err
	}
	if !k.stored && len(k.kept.Mounts) > 0 {
		// A predecessor that handed its mounts over left its own memfd
		// there: this one replaces it.
		if err := k.store.Remove(keptFDName); err != nil {
			return err
		}
		if err := k.store.Store(keptFDName, k.file.Fd()); err != nil {
			return err
		}
		k.stored = true
	}
	return nil
}

// added keeps a mount that is now live: srv's descriptors go to the
// store, its description (fs.MountState, without the kernel's node
// counts, which a successor after a crash cannot know) to the memfd;
// view is a view's definition (nil: the main mount, always added first).
// Errors are logged: the mount serves, it is only not kept.
func (k *keeping) added(mountpoint string, view *wire.View, srv *fs.Server) {
	if k.store == nil {
		return
	}
	fail := func(err error) {
		k.log.Warn("a mount cannot be kept; a crash of the daemon will leave it dead", zap.String("mountpoint", mountpoint), zap.Error(err))
	}
	dev, err := mountDev(mountpoint)
	if err != nil {
		fail(err)
		return
	}
	st, files, err := srv.Handover()
	if err != nil {
		fail(err)
		return
	}
	defer func() {
		for _, f := range files {
			f.Close() // the store has its own
		}
	}()
	st.IDs = nil
	km := state.KeptMount{Mountpoint: mountpoint, Dev: dev}
	if km.Server, err = json.Marshal(st); err != nil {
		fail(err)
		return
	}
	if view != nil {
		km.View, _ = json.Marshal(view)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	km.FD = fuseFDName(mountpoint)
	for i := range st.Specials {
		km.Specials = append(km.Specials, km.FD+"-"+strconv.Itoa(i+1))
	}
	for i, name := range append([]string{km.FD}, km.Specials...) {
		if err := k.store.Store(name, int(files[i].Fd())); err != nil {
			for _, done := range append([]string{km.FD}, km.Specials...)[:i] {
				k.removeLocked(done)
			}
			fail(err)
			return
		}
	}
	k.kept.Mounts = append(k.kept.Mounts, km)
	if err := k.writeLocked(); err != nil {
		k.log.Warn("the kept record cannot be written", zap.Error(err))
	}
	k.log.Info("mount kept in the descriptor store", zap.String("mountpoint", mountpoint), zap.String("fd", km.FD),
		zap.Int("specials", len(km.Specials)))
}

// resumed records a kept mount served again (its descriptor is in the
// store already).
func (k *keeping) resumed(km *keptMount) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !slices.ContainsFunc(k.kept.Mounts, func(m state.KeptMount) bool { return m.Mountpoint == km.Mountpoint }) {
		k.kept.Mounts = append(k.kept.Mounts, km.KeptMount)
	}
	if err := k.writeLocked(); err != nil {
		k.log.Warn("the kept record cannot be written", zap.Error(err))
	}
}

// dropped takes a mount out of the store (a view removed, or a clean
// stop), before it is unmounted: a successor must not be given a
// descriptor of a connection that is ending.
func (k *keeping) dropped(mountpoint string) {
	if k.store == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, m := range k.kept.Mounts {
		if m.Mountpoint == mountpoint {
			k.kept.Mounts = append(k.kept.Mounts[:i:i], k.kept.Mounts[i+1:]...)
			if err := k.writeLocked(); err != nil {
				k.log.Warn("the kept record cannot be written", zap.Error(err))
			}
			k.removeLocked(m.FD)
			for _, n := range m.Specials {
				k.removeLocked(n)
			}
			return
		}
	}
}

// forget takes a kept mount that is not served out of the store (its
// resume failed), so that its connection ends once no one holds it.
func (k *keeping) forget(km *keptMount) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if i := slices.IndexFunc(k.kept.Mounts, func(m state.KeptMount) bool { return m.Mountpoint == km.Mountpoint }); i >= 0 {
		k.kept.Mounts = slices.Delete(k.kept.Mounts, i, i+1)
		if err := k.writeLocked(); err != nil {
			k.log.Warn("the kept record cannot be written", zap.Error(err))
		}
	}
	k.removeLocked(km.FD)
	for _, n := range km.Specials {
		k.removeLocked(n)
	}
}

// release empties the store at a clean stop: nothing is left for a
// successor, whose start then mounts afresh.
func (k *keeping) release() {
	if k.store == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, m := range k.kept.Mounts {
		k.removeLocked(m.FD)
		for _, n := range m.Specials {
			k.removeLocked(n)
		}
	}
	k.kept.Mounts = nil
	if k.file != nil {
		k.removeLocked(keptFDName)
		k.file.Close()
		k.file, k.stored = nil, false
	}
}

func (k *keeping) remove(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.removeLocked(name)
}

func (k *keeping) removeLocked(name string) {
	if k.store == nil {
		return
	}
	if err := k.store.Remove(name); err != nil {
		k.log.Warn("taking a descriptor out of the store", zap.String("name", name), zap.Error(err))
	}
}

// unused closes the descriptors of kept mounts that were not served (a
// start that failed before it resumed them); the store keeps its copies.
func (k *keeping) unused() {
	if k.main != nil {
		k.main.close()
	}
	for _, km := range k.views {
		km.close()
	}
}
