package kernel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/builtin"
	"github.com/devfsd/devfsd/modload/exec"
)

// Options configures a Source. Zero fields take the defaults.
type Options struct {
	// Namespace is where the nodes go. Required.
	Namespace Namespace
	// SysfsRoot is where sysfs is mounted. Default "/sys".
	SysfsRoot string
	// ModulesDevname is the modules.devname file. Default
	// /lib/modules/$(uname -r)/modules.devname. A file that does not
	// exist means no module autoload.
	ModulesDevname string
	// Modprobe is the modprobe program, run as "Modprobe -q -- MODULE".
	// Default: the kernel's own (/proc/sys/kernel/modprobe), else
	// /sbin/modprobe.
	Modprobe string
	// ModprobeTimeout bounds one run of Modprobe. Default 5 s.
	ModprobeTimeout time.Duration
	// ReceiveBuffer is the uevent socket's receive buffer in bytes.
	// Default DefaultReceiveBuffer.
	ReceiveBuffer int
	// RescanDelay bounds how long a rescan after an overrun waits for the
	// socket's queue to drain. Default 250 ms.
	RescanDelay time.Duration
	// Defaults gives a node's mode and owner where its uevent has no
	// DEVMODE, DEVUID or DEVGID. Default: builtin.DefaultAttrs.
	Defaults func(t dcache.Type, path string) (perm, uid, gid uint32)
	// Runner runs Modprobe. Default: a Runner of the source's own; pass
	// the daemon's to have the program's lookups recognised as the
	// loader's.
	Runner *exec.Runner
	// Owned, in a daemon that a predecessor handed its namespace to (an
	// upgrade), are the nodes the predecessor's source registered: node
	// path -> identity (Owned). A device whose name holds the node of
	// that identity is the source's own, not a collision.
	Owned map[string]uint64
	// Logger logs; nil: nowhere.
	Logger *zap.Logger
}

// Source is the kernel's device source: coldplug from sysfs, hotplug from
// the kernel's uevents, and module autoload on a lookup miss. It is a
// modload.Loader and modload.Decliner. Safe for concurrent use.
//
// # Which nodes are the kernel's
//
// The source remembers every device it knows (by DEVPATH) and the
// identity of the node it registered for it. It only ever unregisters or
// touches a node whose identity is one it registered: a node a user made
// (through the mount or the control API) is never removed or changed.
//
// # Collisions
//
// When the kernel adds a device whose name is taken by a node the source
// did not register (a user's mknod, a symlink, a control registration),
// the user's node is kept, as devtmpfs keeps a node it did not make: the
// collision is counted (Stats.Collisions) and logged, and the device is
// remembered. Once the name is free again — the user removed their node —
// the device's node is registered on the next uevent for the device, the
// next rescan, or the first lookup of the name (Load), whichever comes
// first. Two kernel devices claiming one name are the same case: the
// first keeps it, the second gets it when the first is removed.
//
// # Lock order
//
//	Source.mu (one uevent, rescan or registration at a time)
//	  the Namespace's locks (dcache: directory mu, ...)
//
// Nothing is held while running Modprobe or while a Load waits.
type Source struct {
	opts     Options
	ns       Namespace
	log      *zap.Logger
	run      *exec.Runner
	devname  atomic.Pointer[devnameTable]
	defaults func(dcache.Type, string) (uint32, uint32, uint32)

	mu sync.Mutex
	// Guarded by mu:
	byPath  map[string]*entry          // DEVPATH -> device
	names   map[string][]*entry        // node path -> devices claiming it (usually one)
	dirs    map[string]int             // directory -> device names claimed under it
	waiters map[string][]chan struct{} // node path -> Loads waiting for it
	// floor: every uevent up to this SEQNUM is reflected by the last
	// rescan (the kernel's count when it began).
	floor uint64
	// tombs holds the SEQNUM of the uevent that removed a device (or moved
	// it away), for the devices removed last (at most maxTombs, oldest
	// first in tombOrder): an older uevent of that DEVPATH that arrives
	// after it is stale.
	tombs     map[string]uint64
	tombOrder []string
	reg       int // nodes registered now

	runMu sync.Mutex
	runs  map[string]*modRun // module -> modprobe running; guarded by runMu
	// joined counts loads that waited for a run another load started.
	joined atomic.Uint64

	conn   *conn
	done   chan struct{} // closed when the reader has stopped
	closed atomic.Bool

	st counters
}

// entry is one device the source knows.
type entry struct {
	dev Device
	// id is the identity of the node registered for dev; 0 while none is
	// (its name taken, or registration failed).
	id uint64
}

// modRun is one run of Modprobe, shared by the loads that need its module.
type modRun struct {
	done chan struct{}
	err  error // set before done is closed
}

var (
	_ modload.Loader   = (*Source)(nil)
	_ modload.Decliner = (*Source)(nil)
)

// New returns a Source; it reads ModulesDevname and touches nothing else
// until Start (or Coldplug).
func New(opts Options) (*Source, error) {
	if opts.Namespace == nil {
		return nil, errors.New("kernel: no Namespace")
	}
	if opts.SysfsRoot == "" {
		opts.SysfsRoot = "/sys"
	}
	if opts.ModulesDevname == "" {
		var u syscall.Utsname
		if err := syscall.Uname(&u); err == nil {
			opts.ModulesDevname = filepath.Join("/lib/modules", utsString(u.Release[:]), "modules.devname")
		}
	}
	if opts.Modprobe == "" {
		opts.Modprobe = "/sbin/modprobe"
		if b, err := os.ReadFile("/proc/sys/kernel/modprobe"); err == nil {
			if p := string(trimNewline(b)); p != "" {
				opts.Modprobe = p
			}
		}
	}
	if opts.ModprobeTimeout <= 0 {
		opts.ModprobeTimeout = 5 * time.Second
	}
	if opts.ReceiveBuffer <= 0 {
		opts.ReceiveBuffer = DefaultReceiveBuffer
	}
	if opts.RescanDelay <= 0 {
		opts.RescanDelay = 250 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	s := &Source{
		opts:     opts,
		ns:       opts.Namespace,
		log:      opts.Logger.Named("kernel"),
		run:      opts.Runner,
		defaults: opts.Defaults,
		byPath:   map[string]*entry{},
		names:    map[string][]*entry{},
		dirs:     map[string]int{},
		tombs:    map[string]uint64{},
		waiters:  map[string][]chan struct{}{},
		runs:     map[string]*modRun{},
	}
	if s.run == nil {
		s.run = exec.NewRunner(s.log)
	}
	if s.defaults == nil {
		s.defaults = func(t dcache.Type, p string) (uint32, uint32, uint32) {
			a := builtin.DefaultAttrs(t, p)
			return a.Perm, a.UID, a.GID
		}
	}
	if err := s.ReloadModulesDevname(); err != nil {
		return nil, err
	}
	return s, nil
}

func utsString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// Start listens for the kernel's uevents, registers every device sysfs
// has (coldplug), and applies uevents as they come until Close. The socket
// is opened before sysfs is read, so no device added in between is
// missed.
func (s *Source) Start() error {
	if s.conn != nil {
		return errors.New("kernel: Start called twice")
	}
	c, err := dial(s.opts.ReceiveBuffer)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := s.rescan(false); err != nil {
		c.Close()
		return err
	}
	s.log.Info("coldplug done", zap.Int("devices", s.Stats().Devices),
		zap.Int("registered", s.Stats().Registered), zap.Duration("took", time.Since(start)))
	s.conn = c
	s.done = make(chan struct{})
	go s.reader()
	return nil
}

// Close stops the hotplug reader and waits for it. Nodes stay registered.
// Idempotent.
func (s *Source) Close() error {
	if s.conn == nil || !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := s.conn.Close()
	<-s.done
	return err
}

// Coldplug registers every device sysfs has, without listening for
// uevents: Rescan, for a namespace that is not to follow hotplug.
func (s *Source) Coldplug() error { return s.rescan(false) }

// Rescan reads sysfs and converges the namespace to it: a device sysfs
// has and the namespace lacks is registered (unless a node the source did
// not make holds its name), a node the source registered whose device is
// gone is unregistered, a node the source registered whose device now has
// another name or number is replaced. Nodes the source did not register
// are never touched. What `devfsd ctl trigger` asks for, and the answer
// to an overrun.
func (s *Source) Rescan() error { return s.rescan(true) }

func (s *Source) rescan(count bool) error {
	// mu is held across the scan: a uevent the reader applied between
	// the scan and taking mu would otherwise be undone by a scan older
	// than it.
	s.mu.Lock()
	defer s.mu.Unlock()
	// The kernel counts a uevent (SEQNUM) after the sysfs change it
	// reports (device_add links /sys/dev/... before its add, device_del
	// unlinks it before its remove), so a scan that starts after reading
	// the count reflects every uevent up to it: those still queued in the
	// socket are stale once the scan is applied.
	seq := readSeqnum(s.opts.SysfsRoot)
	devs, bad, err := scan(s.opts.SysfsRoot, s.defaults)
	if err != nil {
		return err
	}
	for _, b := range bad {
		s.st.malformed.Add(1)
		s.log.Warn("sysfs device refused", zap.String("entry", b.entry), zap.Error(b.err))
	}
	if count {
		s.st.rescans.Add(1)
	}
	seen := make(map[string]bool, len(devs))
	for _, d := range devs {
		seen[d.DevPath] = true
	}
	var gone []*entry
	for p, e := range s.byPath {
		if !seen[p] {
			gone = append(gone, e)
		}
	}
	for _, e := range gone {
		s.dropLocked(e)
	}
	for _, d := range devs {
		s.addLocked(d)
	}
	s.floor = supersede(s.floor, seq)
	return nil
}

// readSeqnum returns the kernel's uevent count (root/kernel/uevent_seqnum),
// 0 if it cannot be read.
func readSeqnum(root string) uint64 {
	b, err := os.ReadFile(filepath.Join(root, "kernel", "uevent_seqnum"))
	if err != nil {
		return 0
	}
	n, err := parseDecimal(string(trimNewline(b)), 64)
	if err != nil {
		return 0
	}
	return n
}

// reader applies uevents until Close. After an overrun it rescans once the
// socket's queue is drained, or RescanDelay after the overrun, whichever
// comes first.
func (s *Source) reader() {
	defer close(s.done)
	var dirtySince time.Time // zero: no overrun pending
	for {
		msg, snd, err := s.conn.recv(dirtySince.IsZero())
		switch {
		case err != nil && s.closed.Load():
			return // Close: the poller says "use of closed file"
		case errors.Is(err, errAgain):
			s.rescanAfterOverrun()
			dirtySince = time.Time{}
			continue
		case errors.Is(err, errOverrun):
			s.st.overruns.Add(1)
			s.log.Warn("uevents lost: receive buffer overrun; sysfs will be rescanned")
			if dirtySince.IsZero() {
				dirtySince = time.Now()
			}
			continue
		case err != nil:
			s.log.Error("uevent socket failed; hotplug stopped", zap.Error(err))
			return
		}
		s.handle(msg, snd)
		if !dirtySince.IsZero() && time.Since(dirtySince) >= s.opts.RescanDelay {
			s.rescanAfterOverrun()
			dirtySince = time.Time{}
		}
	}
}

func (s *Source) rescanAfterOverrun() {
	if err := s.rescan(true); err != nil {
		s.log.Error("rescan after overrun failed", zap.Error(err))
	}
}

// handle applies one message if the kernel sent it and it is a
// well-formed uevent.
func (s *Source) handle(msg []byte, snd sender) {
	if !snd.fromKernel() {
		s.st.forged.Add(1)
		s.log.Debug("uevent not from the kernel ignored", zap.Uint32("port", snd.portID),
			zap.Int32("pid", snd.pid), zap.Uint32("uid", snd.uid), zap.Bool("creds", snd.creds))
		return
	}
	if snd.trunc {
		s.st.malformed.Add(1)
		s.log.Warn("uevent truncated and refused", zap.Int("bytes", len(msg)))
		return
	}
	ev, err := ParseUevent(msg)
	if err != nil {
		s.st.malformed.Add(1)
		s.log.Warn("uevent refused", zap.Error(err))
		return
	}
	s.Apply(ev)
}

// Apply applies a uevent the kernel sent (the reader's path; exported for
// tests and for a daemon that receives uevents another way).
//
// The kernel numbers its uevents (SEQNUM) but does not deliver them
// strictly in that order: two uevents raised at once on two CPUs may
// arrive swapped. What must keep the kernel's order is each device's own
// uevents, which its driver raises one after another; so a uevent is
// stale, and ignored, when its SEQNUM is not after that of the last one
// applied to its DEVPATH (or of the one that removed it, for the devices
// removed last), or not after the kernel's count when the last scan of
// sysfs began (the namespace already reflects it).
func (s *Source) Apply(ev Uevent) {
	s.st.countAction(ev.Action)
	s.mu.Lock()
	defer s.mu.Unlock()
	last := s.floor
	if e := s.byPath[ev.DevPath]; e != nil {
		last = max(last, e.dev.Seq)
	} else if t, ok := s.tombs[ev.DevPath]; ok {
		last = max(last, t)
	}
	if ev.Seq <= last {
		s.st.stale.Add(1)
		s.log.Info("stale uevent ignored", zap.String("action", ev.Action), zap.String("devpath", ev.DevPath),
			zap.Uint64("seq", ev.Seq), zap.Uint64("after", last))
		return
	}
	t := dcache.TypeChar
	if ev.Env["SUBSYSTEM"] == "block" {
		t = dcache.TypeBlock
	}
	n, hasNode, err := NodeOf(ev.Env, t, s.defaults)
	if err != nil {
		s.st.malformed.Add(1)
		s.log.Warn("uevent refused", zap.String("action", ev.Action), zap.String("devpath", ev.DevPath), zap.Error(err))
		return
	}
	d := Device{Node: n, DevPath: ev.DevPath, Subsystem: ev.Env["SUBSYSTEM"], Driver: ev.Env["DRIVER"], Env: ev.Env, Seq: ev.Seq}
	s.log.Debug("uevent", zap.String("action", ev.Action), zap.String("devpath", ev.DevPath),
		zap.Uint64("seq", ev.Seq), zap.String("devname", n.Path))
	e := s.byPath[ev.DevPath]
	switch ev.Action {
	case ActionAdd:
		if hasNode {
			s.addLocked(d)
		}
	case ActionRemove:
		if e != nil {
			s.dropLocked(e)
		}
		s.tombLocked(ev.DevPath, ev.Seq)
	case ActionMove:
		old := s.byPath[ev.Env["DEVPATH_OLD"]]
		if old != nil && ev.Seq <= old.dev.Seq {
			s.st.stale.Add(1)
			return
		}
		s.tombLocked(ev.Env["DEVPATH_OLD"], ev.Seq)
		if old != nil && hasNode && sameNode(old.dev.Node, n) {
			// The same node under a new DEVPATH: re-keyed, not re-registered.
			if e != nil && e != old {
				s.dropLocked(e) // a device the kernel no longer has there
			}
			delete(s.byPath, old.dev.DevPath)
			old.dev = d
			s.byPath[d.DevPath] = old
			s.ensureLocked(old)
			return
		}
		if old != nil {
			s.dropLocked(old)
		}
		if hasNode {
			s.addLocked(d)
		}
	default: // change, bind, unbind, online, offline
		if !hasNode {
			if e != nil && (ev.Action == ActionBind || ev.Action == ActionUnbind) {
				dev := e.dev.clone()
				dev.Driver = ev.Env["DRIVER"]
				if dev.Driver == "" {
					delete(dev.Env, "DRIVER")
				} else {
					dev.Env["DRIVER"] = dev.Driver
				}
				dev.Seq = ev.Seq
				e.dev = dev
			}
			return
		}
		if e == nil || !sameNode(e.dev.Node, n) {
			s.addLocked(d)
			return
		}
		e.dev = d
		s.ensureLocked(e)
		if ev.Action == ActionChange && e.id != 0 {
			if err := s.ns.Changed(n.Path, e.id); err != nil {
				s.log.Debug("change not raised", zap.String("name", n.Path), zap.Error(err))
			}
		}
	}
}

// maxTombs bounds Source.tombs: uevents arrive swapped by microseconds,
// not by a thousand removals.
const maxTombs = 1024

// tombLocked records that the uevent seq removed (or moved away) the
// device at devpath. Preconditions: mu held.
func (s *Source) tombLocked(devpath string, seq uint64) {
	if _, ok := s.tombs[devpath]; !ok {
		if len(s.tombOrder) == maxTombs {
			delete(s.tombs, s.tombOrder[0])
			s.tombOrder = s.tombOrder[1:]
		}
		s.tombOrder = append(s.tombOrder, devpath)
	}
	s.tombs[devpath] = max(s.tombs[devpath], seq)
}

// sameNode reports whether a and b are the same device node: name, type
// and number. Modes and owners may differ (a user's chmod).
func sameNode(a, b modload.Node) bool {
	return a.Path == b.Path && a.Type == b.Type && a.Major == b.Major && a.Minor == b.Minor
}

// addLocked makes d known and registers its node: a device already known
// with the same node is updated (its node registered again if it went
// missing), one with another node is replaced. Preconditions: mu held.
func (s *Source) addLocked(d Device) {
	if e := s.byPath[d.DevPath]; e != nil {
		if sameNode(e.dev.Node, d.Node) {
			if d.Seq == 0 {
				d.Seq = e.dev.Seq
			}
			e.dev = d
			s.ensureLocked(e)
			return
		}
		s.dropLocked(e)
	}
	e := &entry{dev: d}
	s.byPath[d.DevPath] = e
	s.names[d.Node.Path] = append(s.names[d.Node.Path], e)
	for dir := path.Dir(d.Node.Path); dir != "."; dir = path.Dir(dir) {
		s.dirs[dir]++
	}
	s.ensureLocked(e)
}

// ensureLocked registers e's node unless it is registered and still
// there, or its name is held by another node. Preconditions: mu held.
func (s *Source) ensureLocked(e *entry) {
	p := e.dev.Node.Path
	if e.id != 0 {
		if _, id, ok := s.ns.Lookup(p); ok && id == e.id {
			return
		}
		e.id = 0 // removed or replaced through the mount
		s.reg--
	}
	for _, o := range s.names[p] {
		if o != e && o.id != 0 {
			if _, id, ok := s.ns.Lookup(p); ok && id == o.id {
				s.st.collisions.Add(1)
				s.log.Warn("two kernel devices claim one name; the first keeps it", zap.String("name", p),
					zap.String("holder", o.dev.DevPath), zap.String("devpath", e.dev.DevPath))
				return
			}
			o.id = 0
			s.reg--
		}
	}
	err := s.ns.Register(e.dev.Node)
	switch {
	case err == nil:
		if _, id, ok := s.ns.Lookup(p); ok {
			e.id = id
			s.reg++
		}
		// A Load waits for the name or, for a directory, for anything
		// under it.
		for w := p; w != "."; w = path.Dir(w) {
			for _, c := range s.waiters[w] {
				close(c)
			}
			delete(s.waiters, w)
		}
	case errors.Is(err, syscall.EEXIST) && s.adoptLocked(e):
	case errors.Is(err, syscall.EEXIST):
		s.st.collisions.Add(1)
		s.log.Warn("a kernel device's name is taken by a node devfsd did not register; that node is kept",
			zap.String("name", p), zap.String("devpath", e.dev.DevPath), zap.Stringer("device", e.dev.Node))
	default:
		s.st.failures.Add(1)
		s.log.Warn("kernel device not registered", zap.Stringer("device", e.dev.Node),
			zap.String("devpath", e.dev.DevPath), zap.Error(err))
	}
}

// adoptLocked takes the node at e's name as e's own if a predecessor's
// source registered it (Options.Owned). Preconditions: mu held.
func (s *Source) adoptLocked(e *entry) bool {
	p := e.dev.Node.Path
	want, ok := s.opts.Owned[p]
	if !ok {
		return false
	}
	if _, id, ok := s.ns.Lookup(p); ok && id == want {
		e.id = id
		s.reg++
		return true
	}
	return false
}

// Owned returns the nodes the source registered and that are still
// there as it registered them: node path -> identity, for a successor
// (Options.Owned).
func (s *Source) Owned() map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]uint64{}
	for _, e := range s.byPath {
		if e.id != 0 {
			out[e.dev.Node.Path] = e.id
		}
	}
	return out
}

// dropLocked forgets e and unregisters its node if it is still the one
// registered for it; another device claiming the name then gets it.
// Preconditions: mu held.
func (s *Source) dropLocked(e *entry) {
	delete(s.byPath, e.dev.DevPath)
	p := e.dev.Node.Path
	rest := slices.DeleteFunc(s.names[p], func(o *entry) bool { return o == e })
	if len(rest) == 0 {
		delete(s.names, p)
	} else {
		s.names[p] = rest
	}
	for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
		if s.dirs[dir]--; s.dirs[dir] == 0 {
			delete(s.dirs, dir)
		}
	}
	if e.id == 0 {
		return
	}
	err := s.ns.Unregister(p, e.id)
	e.id = 0
	s.reg--
	if err != nil && !errors.Is(err, syscall.ENOENT) {
		s.log.Info("kernel device gone; the node at its name is not the one registered for it and is kept",
			zap.String("name", p), zap.Error(err))
	}
	for _, o := range rest {
		s.ensureLocked(o)
		if o.id != 0 {
			break
		}
	}
}

// Info returns what the kernel said about the device whose node is at p
// (a path as the Registrar takes it): the node, DEVPATH, SUBSYSTEM,
// DRIVER and every uevent variable. ok is false if the source knows no
// device of that name. registered says whether the node at p is the one
// the source registered for it.
func (s *Source) Info(p string) (d Device, registered, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	es := s.names[p]
	if len(es) == 0 {
		return Device{}, false, false
	}
	e := es[0]
	for _, o := range es {
		if o.id != 0 {
			e = o
			break
		}
	}
	return e.dev.clone(), e.id != 0, true
}

// Devices returns every device the source knows, sorted by node path.
func (s *Source) Devices() []Device {
	s.mu.Lock()
	out := make([]Device, 0, len(s.byPath))
	for _, e := range s.byPath {
		out = append(out, e.dev.clone())
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Device) int {
		if a.Node.Path != b.Node.Path {
			if a.Node.Path < b.Node.Path {
				return -1
			}
			return 1
		}
		if a.DevPath < b.DevPath {
			return -1
		}
		return 1
	})
	return out
}

// LoaderName implements lookup's Namer.
func (s *Source) LoaderName() string { return "kernel" }

// IsLoader reports whether pid is in the process group of a Modprobe the
// source is running (its lookups bypass the loader's wait).
func (s *Source) IsLoader(pid uint32) bool { return s.run.InGroup(pid) }

// Declines implements modload.Decliner: a name that modules.devname does
// not list (as a node or as a directory nodes lie in) and that is no
// device the kernel has (nor a directory such devices lie in) is
// declined.
func (s *Source) Declines(dir, name string) bool {
	p := name
	if dir != "" {
		p = dir + "/" + name
	}
	if path.Clean(p) != p {
		return false // Load refuses it with a clear error
	}
	if s.devname.Load().has(p) {
		return false
	}
	s.mu.Lock()
	_, known := s.names[p]
	known = known || s.dirs[p] > 0
	s.mu.Unlock()
	return !known
}

// Load implements modload.Loader: a device the kernel has whose name was
// taken (or a directory such devices lie in) is registered now if the
// name is free; a name modules.devname lists, or a directory its names
// lie in, has the modules loaded by Modprobe, and Load then waits —
// bounded by ctx — for the kernel's add of the name (of a name under the
// directory). Any other name is ENOENT at once.
func (s *Source) Load(ctx context.Context, dir, name string, _ dcache.Caller) error {
	if err := modload.ValidateLookup(dir, name); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	p := path.Join(dir, name)
	s.mu.Lock()
	if s.registerNameLocked(p) {
		s.mu.Unlock()
		return nil
	}
	ents := s.devname.Load().entries(p)
	if len(ents) == 0 {
		s.mu.Unlock()
		return fmt.Errorf("kernel: no device and no module for %s: %w", p, syscall.ENOENT)
	}
	w := make(chan struct{})
	s.waiters[p] = append(s.waiters[p], w)
	s.mu.Unlock()
	defer s.unwait(p, w)

	var mods []string
	for _, e := range ents {
		if !slices.Contains(mods, e.Module) {
			mods = append(mods, e.Module)
		}
	}
	var errs []error
	for _, m := range mods {
		if err := s.modprobe(ctx, m); err != nil {
			errs = append(errs, fmt.Errorf("kernel: loading module %s for %s: %w", m, p, err))
		}
	}
	if len(errs) == len(mods) {
		return errors.Join(errs...)
	}
	// A module may have been loaded before, its device there already
	// and its add seen while the name was taken: sysfs says.
	for _, e := range ents {
		s.probe(e)
	}
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kernel: modules %v loaded, no device %s from the kernel: %w", mods, p, ctx.Err())
	}
}

// registerNameLocked registers known devices' nodes at p (or under
// directory p) where their names are free; it reports whether a node the
// source registered is at p (or under p) now. Preconditions: mu held.
func (s *Source) registerNameLocked(p string) bool {
	for _, e := range s.names[p] {
		s.ensureLocked(e)
		if e.id != 0 {
			return true
		}
	}
	if s.dirs[p] == 0 {
		return false
	}
	found := false
	prefix := p + "/"
	for name, es := range s.names {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		for _, e := range es {
			s.ensureLocked(e)
			if e.id != 0 {
				found = true
				break
			}
		}
	}
	return found
}

// unwait drops Load's waiter w for p (if ensureLocked has not).
func (s *Source) unwait(p string, w chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rest := slices.DeleteFunc(s.waiters[p], func(o chan struct{}) bool { return o == w })
	if len(rest) == 0 {
		delete(s.waiters, p)
	} else {
		s.waiters[p] = rest
	}
}

// probe registers the device of a modules.devname entry if sysfs has it
// under that name.
func (s *Source) probe(ent DevnameEntry) {
	dir := filepath.Join(s.opts.SysfsRoot, "dev")
	rel := numberEntry(ent.Type, ent.Major, ent.Minor)
	d, ok, err := readDevice(s.opts.SysfsRoot, filepath.Join(dir, filepath.Dir(rel)), filepath.Base(rel), ent.Type, s.defaults)
	if err != nil || !ok || d.Node.Path != ent.Name {
		return
	}
	s.mu.Lock()
	s.addLocked(d)
	s.mu.Unlock()
}

// modprobe runs Modprobe for module, or waits for the run already going.
func (s *Source) modprobe(ctx context.Context, module string) error {
	s.runMu.Lock()
	r := s.runs[module]
	first := r == nil
	if first {
		r = &modRun{done: make(chan struct{})}
		s.runs[module] = r
	}
	s.runMu.Unlock()
	if first {
		s.st.autoloads.Add(1)
		var stderr []string
		res, err := s.run.Run(ctx, exec.Spec{
			Argv:    []string{s.opts.Modprobe, "-q", "--", module},
			Timeout: s.opts.ModprobeTimeout,
			Stderr: func(l string) {
				if len(stderr) < 8 {
					stderr = append(stderr, l)
				}
			},
		})
		if err != nil {
			s.st.autoloadFailures.Add(1)
			s.log.Warn("module autoload failed", zap.String("module", module), zap.Int("exit", res.ExitCode),
				zap.Strings("stderr", stderr), zap.Error(err))
		} else {
			s.log.Info("module loaded", zap.String("module", module), zap.Duration("took", res.Elapsed))
		}
		r.err = err
		s.runMu.Lock()
		delete(s.runs, module)
		s.runMu.Unlock()
		close(r.done)
		return err
	}
	s.joined.Add(1)
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
