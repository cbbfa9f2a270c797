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
// # Catching up on a miss
//
// The kernel queues a device's uevent on every listening socket before
// the call that made the device returns (LOOP_CTL_ADD, a write to a
// sysfs uevent file, a module's init), as it makes the devtmpfs node. So
// a lookup miss (Declines, Load) first applies every uevent queued on
// the socket, in order, as the reader would, and only then answers from
// the tree and modules.devname: the first lookup after the call sees the
// device, without waiting for the reader to be scheduled. A message is
// taken from the socket only under mu and applied before mu is released
// — by the reader or by a miss, whichever holds mu — so a miss that
// holds mu has seen the effect of every message taken before it, and
// SEQNUM order, the forged-message check and the rescan after an overrun
// are the same on both paths. The reader never holds mu while it waits
// for the socket to become readable.
//
// Only a miss that reaches the source catches up. A lookup answered from
// a cached miss — the daemon's negative entry, or the kernel's negative
// dentry of one mount, left by a lookup made before the device existed —
// does not ask the loader, nor does one that a helper answers; for those
// the device appears when the reader applies its add, which drops the
// daemon's negative entry (dcache's Register, under the directory's mu)
// and queues the invalidation of every mount's kernel entry. A miss that
// raced the add is cached negatively only if the node was still absent
// under that same mu, so no cached miss outlives the registration.
//
// # Directories
//
// The source makes the missing parent directories of a device's node
// itself, one at a time, and remembers each one it made (by identity).
// When a device goes, each directory above its node that the source made
// and that is empty now is removed, from the node's parent up, stopping
// at the first that is not the source's or still has entries — as
// devtmpfs's delete_path removes only the directories devtmpfs made. A
// directory a user made, or one made before the source started (a
// previous daemon's), is never removed; one the source made that a user
// replaced is no longer the source's.
//
// # Lock order
//
//	Source.mu (one uevent, rescan, registration or socket read at a time)
//	  the Namespace's locks (dcache: directory mu, ...)
//
// Nothing is held while running Modprobe, while a Load waits, or while
// the reader waits for the socket.
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
	// made holds the directories the source registered and their
	// identities, until it removes them or finds another node there.
	made map[string]uint64
	// dirtySince is when an overrun was seen that no rescan has answered
	// yet; zero if none.
	dirtySince time.Time

	runMu sync.Mutex
	runs  map[string]*modRun // module -> modprobe running; guarded by runMu
	// joined counts loads that waited for a run another load started.
	joined atomic.Uint64

	conn   atomic.Pointer[conn] // set by Start, before the reader starts
	done   chan struct{}        // closed when the reader has stopped
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
		made:     map[string]uint64{},
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
	c, err := s.listen()
	if err != nil {
		return err
	}
	start := time.Now()
	if err := s.rescan(false); err != nil {
		s.closed.Store(true)
		c.Close()
		return err
	}
	s.log.Info("coldplug done", zap.Int("devices", s.Stats().Devices),
		zap.Int("registered", s.Stats().Registered), zap.Duration("took", time.Since(start)))
	go s.reader(c)
	return nil
}

// listen opens the uevent socket for Start. Until the reader starts, only
// lookup misses read it.
func (s *Source) listen() (*conn, error) {
	if s.conn.Load() != nil {
		return nil, errors.New("kernel: Start called twice")
	}
	c, err := dial(s.opts.ReceiveBuffer)
	if err != nil {
		return nil, err
	}
	s.done = make(chan struct{})
	if !s.conn.CompareAndSwap(nil, c) {
		c.Close()
		return nil, errors.New("kernel: Start called twice")
	}
	return c, nil
}

// Close stops the hotplug reader and waits for it. Nodes stay registered.
// Idempotent.
func (s *Source) Close() error {
	c := s.conn.Load()
	if c == nil || !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	err := c.Close()
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
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rescanLocked(count)
}

// rescanLocked is Rescan (counted if count). Preconditions: mu held, and
// held across the scan: a uevent applied between the scan and taking mu
// would otherwise be undone by a scan older than it.
func (s *Source) rescanLocked(count bool) error {
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
	s.dirtySince = time.Time{} // the scan answers every overrun seen so far
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

// Batches of uevents applied under one hold of mu: the reader releases
// mu after readerBatch messages so that lookups and registrations are not
// held up by a burst; a miss catching up applies at most catchUpBatch (a
// burst still arriving is left to the reader).
const (
	readerBatch  = 64
	catchUpBatch = 4096
)

// reader applies uevents until Close: whenever the socket is readable, it
// drains it under mu (drainLocked), readerBatch messages per hold, and
// waits again — with mu released — once it is empty.
func (s *Source) reader(c *conn) {
	defer close(s.done)
	var failed error
	err := c.rc.Read(func(fd uintptr) bool {
		for {
			more, err := s.readBatch(c, fd)
			if err != nil {
				failed = err
				return true
			}
			if !more {
				return false // empty: wait until readable
			}
		}
	})
	if s.closed.Load() {
		return // Close: the poller says "use of closed file"
	}
	if failed == nil {
		failed = err
	}
	s.log.Error("uevent socket failed; hotplug stopped", zap.Error(failed))
}

// catchUpLocked applies every uevent queued on the socket now (at most
// catchUpBatch), without waiting: what a lookup miss does before it
// answers (see "Catching up on a miss"). Nothing before Start or after
// Close. Preconditions: mu held.
func (s *Source) catchUpLocked() {
	c := s.conn.Load()
	if !catchUpOnMiss || c == nil || s.closed.Load() {
		return
	}
	var err error
	if cerr := c.rc.Control(func(fd uintptr) { _, err = s.drainLocked(c, fd, catchUpBatch) }); cerr != nil {
		return // closed meanwhile
	}
	if err != nil {
		s.log.Debug("catching up on uevents failed", zap.Error(err)) // the reader reports it
	}
}

// drainLocked applies up to limit messages queued on c's socket fd, in
// order, and reports whether more may be queued (limit reached). After
// an overrun it rescans once the queue is empty, or RescanDelay after
// the overrun if messages keep coming. An error is the socket's: hotplug
// cannot go on. Preconditions: mu held.
func (s *Source) drainLocked(c *conn, fd uintptr, limit int) (more bool, err error) {
	for range limit {
		msg, snd, err := c.recv(fd)
		switch {
		case errors.Is(err, errAgain):
			if !s.dirtySince.IsZero() {
				s.rescanAfterOverrunLocked()
			}
			return false, nil
		case errors.Is(err, errOverrun):
			s.st.overruns.Add(1)
			s.log.Warn("uevents lost: receive buffer overrun; sysfs will be rescanned")
			if s.dirtySince.IsZero() {
				s.dirtySince = time.Now()
			}
			continue
		case err != nil:
			return false, err
		}
		s.handleLocked(msg, snd)
		if !s.dirtySince.IsZero() && time.Since(s.dirtySince) >= s.opts.RescanDelay {
			s.rescanAfterOverrunLocked()
		}
	}
	return true, nil
}

// rescanAfterOverrunLocked answers an overrun. Preconditions: mu held.
func (s *Source) rescanAfterOverrunLocked() {
	if err := s.rescanLocked(true); err != nil {
		s.log.Error("rescan after overrun failed", zap.Error(err))
	}
	s.dirtySince = time.Time{} // a failed scan is not retried until the next overrun
}

// handleLocked applies one message if the kernel sent it and it is a
// well-formed uevent. Preconditions: mu held.
func (s *Source) handleLocked(msg []byte, snd sender) {
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
	s.st.countAction(ev.Action)
	s.applyLocked(ev)
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
	s.applyLocked(ev)
}

// applyLocked is Apply. Preconditions: mu held.
func (s *Source) applyLocked(ev Uevent) {
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
	id, err := s.registerLocked(e.dev.Node)
	switch {
	case err == nil:
		e.id = id
		s.reg++
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

// registerLocked registers n, making its missing parent directories
// first, one at a time, and remembering those it made (Source.made).
// Preconditions: mu held.
func (s *Source) registerLocked(n modload.Node) (uint64, error) {
	for i := strings.IndexByte(n.Path, '/'); i >= 0; i = nextSlash(n.Path, i) {
		dir := n.Path[:i]
		if _, _, ok := s.ns.Lookup(dir); ok {
			continue
		}
		id, err := s.ns.Register(modload.Node{Path: dir, Type: dcache.TypeDir, Perm: 0755})
		if err != nil {
			break // taken meanwhile (not the source's), or the node's Register says why
		}
		s.made[dir] = id
	}
	return s.ns.Register(n)
}

// nextSlash returns the index of the first '/' in p after index i, or -1.
func nextSlash(p string, i int) int {
	j := strings.IndexByte(p[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// pruneLocked removes the directories above the node path p that the
// source made and that are empty now, from p's parent up, stopping at the
// first that is not the source's or has entries (devtmpfs's delete_path).
// Preconditions: mu held.
func (s *Source) pruneLocked(p string) {
	for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
		id, ok := s.made[dir]
		if !ok {
			return
		}
		err := s.ns.Unregister(dir, id)
		switch {
		case err == nil, errors.Is(err, syscall.ENOENT):
			delete(s.made, dir)
		case errors.Is(err, syscall.ESTALE):
			delete(s.made, dir) // another node has the name now
			return
		default: // ENOTEMPTY: still in use
			return
		}
	}
}

// dropLocked forgets e and unregisters its node if it is still the one
// registered for it; another device claiming the name then gets it.
// Directories the source made for the node that are empty afterwards
// are removed (pruneLocked). Preconditions: mu held.
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
	if e.id != 0 {
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
	s.pruneLocked(p)
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

// Declines implements modload.Decliner: once the uevents queued on the
// socket are applied (see "Catching up on a miss"), a name that is no
// device the kernel has (nor a directory such devices lie in) and that
// modules.devname does not list (as a node or as a directory nodes lie
// in) is declined. Applying what the kernel already sent is not a side
// effect of the lookup: the reader would register the same nodes a
// moment later; Declines loads nothing and waits for nobody.
func (s *Source) Declines(dir, name string) bool {
	p := name
	if dir != "" {
		p = dir + "/" + name
	}
	if path.Clean(p) != p {
		return false // Load refuses it with a clear error
	}
	s.mu.Lock()
	s.catchUpLocked()
	_, known := s.names[p]
	known = known || s.dirs[p] > 0
	s.mu.Unlock()
	return !known && !s.devname.Load().has(p)
}

// Load implements modload.Loader: once the uevents queued on the socket
// are applied (see "Catching up on a miss"), a device the kernel has whose
// name was taken (or a directory such devices lie in) is registered now
// if the name is free; a name modules.devname lists, or a directory its names
// lie in, has the modules loaded by Modprobe, and Load then waits —
// bounded by ctx — for the kernel's add of the name (of a name under the
// directory). Any other name is ENOENT at once.
func (s *Source) Load(ctx context.Context, dir, name string, _ dcache.Caller) error {
	if err := modload.ValidateLookup(dir, name); err != nil {
		return fmt.Errorf("kernel: %w", err)
	}
	p := path.Join(dir, name)
	s.mu.Lock()
	s.catchUpLocked()
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
