package fs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs/viewpath"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/sync/refcount"
)

// fuseRootID is the node id of the mount's root; it is also the inode
// number of the namespace's root.
const fuseRootID = fuse.FUSE_ROOT_ID

// Readdirplus policies (Options.Readdirplus).
const (
	ReaddirplusAuto   = "auto"   // the kernel's adaptive mode (CAP_READDIRPLUS_AUTO)
	ReaddirplusAlways = "always" // READDIRPLUS for every listing
	ReaddirplusNever  = "never"  // plain READDIR only
)

// Defaults of Options (see README.md, "Timeouts").
const (
	DefaultEntryTimeout    = time.Second
	DefaultAttrTimeout     = time.Second
	DefaultNegativeTimeout = time.Second
	DefaultShutdownTimeout = 3 * time.Second
)

// Options configure a Server. A zero timeout is a real zero (the kernel
// caches nothing); use the Default constants for the defaults.
type Options struct {
	// EntryTimeout, AttrTimeout and NegativeTimeout are how long the
	// kernel may cache a name, a node's attributes and a miss. Changes
	// not made through the mount are pushed to the kernel with notifies,
	// so these bound staleness only where a notify was lost.
	EntryTimeout    time.Duration
	AttrTimeout     time.Duration
	NegativeTimeout time.Duration

	// Readdirplus is ReaddirplusAuto (""), ReaddirplusAlways or
	// ReaddirplusNever.
	Readdirplus string

	// NoResend: do not ask the kernel for HAS_RESEND at the mount, so that
	// a successor serves the mount as it would on a kernel before 6.9
	// (resume.go); for the tests of that case.
	NoResend bool

	// ListingCache is how the kernel may cache directory listings
	// (listing.go): ListingCacheAuto (""), ListingCacheOpenDir or
	// ListingCacheOff. Mount refuses any other value.
	ListingCache string

	// AllowOther, DefaultPermissions and Dev are the mount options of
	// those names. Without DefaultPermissions the server checks nothing:
	// every caller may do everything the namespace allows.
	AllowOther         bool
	DefaultPermissions bool
	Dev                bool

	// ShutdownTimeout bounds the drain of live requests at Shutdown.
	// Default DefaultShutdownTimeout.
	ShutdownTimeout time.Duration

	// Debug logs every request and reply (go-fuse's debug output), at
	// debug level through Logger.
	Debug bool

	// Logger receives the server's logs; nil: none.
	Logger *zap.Logger

	// Observer, if not nil, is told how long each request took (metrics).
	Observer OpObserver

	// Journal, if not nil, keeps changes across restarts (package state):
	// a request that changed the namespace or a node's attributes is
	// answered only once WaitDurable says the change is on disk, so that
	// an acknowledged change survives a crash. If it fails, the request is
	// answered EIO (the change was made in memory but is not kept).
	Journal Journal
}

// Journal is what the server needs of the state store.
type Journal interface {
	// WaitDurable waits until every change up to the namespace's event
	// seq is on disk.
	WaitDurable(ctx context.Context, seq uint64) error
}

// durableTimeout bounds a request's wait for the journal.
const durableTimeout = 10 * time.Second

// Server is the FUSE server over one namespace: a fuse.RawFileSystem whose
// node ids are the namespace's inode numbers. Make one with New, then
// Mount it; Shutdown ends it.
type Server struct {
	fuse.RawFileSystem // ENOSYS for everything not implemented here

	// Immutable after New:
	res  *lookup.Resolver
	ns   *dcache.Namespace
	nq   *NotifyQueue
	opts Options
	log  *zap.Logger

	// The kernel's cache timeouts, in nanoseconds; SetTimeouts changes
	// them while requests are served.
	entryTO atomic.Int64
	attrTO  atomic.Int64
	negTO   atomic.Int64

	nodes   *nodeTable
	handles *handleTable

	// noOpendir: the kernel offered CAP_NO_OPENDIR_SUPPORT at INIT (set
	// by Init, before any other request; listing.go).
	noOpendir atomic.Bool
	// expiry schedules the end of listings READDIRPLUS filled (listing.go).
	expiry listingExpiry

	// view, if not nil, filters what this mount shows (view.go); set by
	// NewView, immutable after. The main mount has none: every hook is
	// one nil check.
	view *viewpath.View
	// views are the view servers made from this one (NewView), which
	// follow its timeouts and notify syncs; detach, set by NewView, takes
	// a view out of its parent's set and its mux at Shutdown.
	views  viewSet
	detach func()

	// live counts the requests being served; Shutdown kills it.
	live *refcount.Ref
	// stopping is closed when Shutdown begins: waits end with EINTR.
	stopping chan struct{}

	// Set by Mount:
	srv        *fuse.Server
	mountpoint string
	direct     bool          // mounted with mount(2), not fusermount
	served     chan struct{} // closed when the serve loop returns
	notifyDone chan struct{} // closed when the notify worker returns
	sweep      *sweeper      // the sweep of expired negative entries (sweep.go)

	// specialsMu guards specials, the special mounts of this mount
	// (special.go), set by a successful MountSpecials, and specialsShut,
	// set by Shutdown, which detaches them before the FUSE mount. Held
	// across MountSpecials. Before every other lock of the package.
	specialsMu   sync.Mutex
	specials     *Specials
	specialsShut bool

	shutdownOnce sync.Once
	shutdownErr  error

	// handedOver is set by HandedOver (resume.go): a successor serves the
	// mount, which Shutdown then leaves alone.
	handedOver atomic.Bool
	// resumed is set by Resume: handles a predecessor gave are honoured
	// (files.go).
	resumed atomic.Bool

	refused atomic.Uint64 // requests refused while shutting down
	panics  atomic.Uint64 // handler panics recovered
}

// New returns a server over res's namespace. nq must be the Sink of that
// namespace (see NotifyQueue).
func New(res *lookup.Resolver, nq *NotifyQueue, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	if nq == nil {
		nq = NewNotifyQueue(0)
	}
	ns := res.Namespace()
	s := &Server{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		res:           res,
		ns:            ns,
		nq:            nq,
		opts:          opts,
		log:           opts.Logger,
		nodes:         newNodeTable(ns.Root()),
		handles:       newHandleTable(),
		live:          refcount.New(),
		stopping:      make(chan struct{}),
		served:        make(chan struct{}),
		notifyDone:    make(chan struct{}),
	}
	s.SetTimeouts(opts.EntryTimeout, opts.AttrTimeout, opts.NegativeTimeout)
	return s
}

// SetTimeouts changes the entry, attribute and negative timeouts given to
// the kernel in replies from now on (a configuration reload); negative
// values are 0. What the kernel cached before keeps the timeout it was
// given: a name's answer does not change with its timeout, so nothing is
// invalidated (the negative entries whose time is cut are dropped by
// dcache.Namespace.SetNegativeTTL, which tells the kernel).
func (s *Server) SetTimeouts(entry, attr, negative time.Duration) {
	s.entryTO.Store(int64(max(entry, 0)))
	s.attrTO.Store(int64(max(attr, 0)))
	s.negTO.Store(int64(max(negative, 0)))
	s.views.setTimeouts(entry, attr, negative) // the views follow (view.go)
}

func (s *Server) entryTimeout() time.Duration { return time.Duration(s.entryTO.Load()) }
func (s *Server) attrTimeout() time.Duration  { return time.Duration(s.attrTO.Load()) }
func (s *Server) negTimeout() time.Duration   { return time.Duration(s.negTO.Load()) }

// durable waits until the changes made so far are kept (Options.Journal),
// and returns the status to answer: OK, or EIO if they cannot be kept.
// Called after a change succeeded, with no lock held; the request's own
// interrupt is not honoured here, the change being made.
func (s *Server) durable(op string) fuse.Status {
	j := s.opts.Journal
	if j == nil {
		return fuse.OK
	}
	ctx, cancel := context.WithTimeout(context.Background(), durableTimeout)
	err := j.WaitDurable(ctx, s.ns.LastSeq())
	cancel()
	if err != nil {
		s.log.Error("a change was made but cannot be kept; answering EIO", zap.String("op", op), zap.Error(err))
		return fuse.EIO
	}
	return fuse.OK
}

func (s *Server) String() string { return "devfsd" }

// mountOptions builds go-fuse's options from s.opts.
func (s *Server) mountOptions(direct bool) *fuse.MountOptions {
	o := &fuse.MountOptions{
		AllowOther: s.opts.AllowOther,
		FsName:     "devfsd",
		Name:       "devfsd",
		// The server's own reads of the mount never happen (see the
		// package doc), so no poll hack; xattrs are not real here.
		DisableXAttrs: true,
		Debug:         s.opts.Debug,
		Logger:        zap.NewStdLog(s.log.Named("fuse")),
		PanicHandler:  s.panicked,
		DirectMount:   direct,
		// Without this a DirectMount refuses a fallback to fusermount;
		// Mount does its own fallback so that it can report both errors.
		DirectMountStrict: direct,
		MaxBackground:     64,
	}
	if !s.opts.NoResend {
		// A successor (resume.go) has the kernel resend what this
		// server read and did not answer.
		o.ExtraCapabilities = fuse.CAP_HAS_RESEND
	}
	if s.opts.Dev {
		o.Options = append(o.Options, "dev")
	} else {
		o.Options = append(o.Options, "nodev")
	}
	o.Options = append(o.Options, "nosuid")
	if s.opts.DefaultPermissions {
		o.Options = append(o.Options, "default_permissions")
	}
	switch s.opts.Readdirplus {
	case ReaddirplusNever:
		o.DisableReadDirPlus = true
	case ReaddirplusAlways:
	default:
		o.ExtraCapabilities |= fuse.CAP_READDIRPLUS_AUTO
	}
	o.ExtraCapabilities |= s.listingCaps()
	return o
}

func (s *Server) panicked(v any) fuse.Status {
	s.panics.Add(1)
	s.log.Error("panic in a FUSE handler (recovered; answered EIO)",
		zap.Any("panic", v), zap.Stack("stack"))
	return fuse.EIO
}

// Mount mounts the namespace on dir and starts serving it. As root it
// mounts with mount(2) and falls back to fusermount3; otherwise it uses
// fusermount3 only. When it returns nil the mount is live: the kernel has
// completed INIT and requests are being read.
//
// The server never waits for its own mount by touching it (go-fuse's
// WaitMount opens a file in it): the process serving a FUSE mount must not
// use that mount itself, so "live" is judged by INIT, which NewServer has
// completed before it returns.
func (s *Server) Mount(dir string) error {
	if s.srv != nil {
		return errors.New("fs: already mounted")
	}
	if err := checkListingCache(s.opts.ListingCache); err != nil {
		return err
	}
	var errs []string
	var srv *fuse.Server
	var err error
	if os.Geteuid() == 0 {
		srv, err = fuse.NewServer(s, dir, s.mountOptions(true))
		if err == nil {
			s.direct = true
		} else {
			errs = append(errs, fmt.Sprintf("mount(2) as root: %v", err))
		}
	}
	if srv == nil {
		if _, lerr := lookFusermount(); lerr != nil {
			errs = append(errs, "fusermount3: not found in $PATH (install fuse3)")
		} else if srv, err = fuse.NewServer(s, dir, s.mountOptions(false)); err != nil {
			hint := ""
			if s.opts.AllowOther && os.Geteuid() != 0 {
				hint = " (its own message is above; note that as a user allow_other needs user_allow_other in /etc/fuse.conf, else pass --allow-other=false)"
			}
			errs = append(errs, fmt.Sprintf("fusermount3: %v%s", strings.TrimSpace(err.Error()), hint))
		}
	}
	if srv == nil {
		return fmt.Errorf("cannot mount on %s: %s", dir, strings.Join(errs, "; "))
	}
	s.srv = srv
	s.mountpoint = dir
	s.nq.enable()
	go func() {
		defer close(s.notifyDone)
		s.nq.run(srv, s.log.Named("notify"))
	}()
	if s.view == nil { // one sweeper per namespace: its EXPIRE events reach every mount
		s.sweep = startSweeper(s.ns, s.log.Named("sweep"), nil)
	}
	go func() {
		defer close(s.served)
		srv.Serve()
	}()
	s.log.Info("mounted", zap.String("mountpoint", dir), zap.Bool("direct", s.direct),
		zap.Bool("dev", s.opts.Dev), zap.Bool("allow_other", s.opts.AllowOther),
		zap.Bool("default_permissions", s.opts.DefaultPermissions),
		zap.String("readdirplus", s.readdirplusPolicy()))
	return nil
}

func (s *Server) readdirplusPolicy() string {
	if s.opts.Readdirplus == "" {
		return ReaddirplusAuto
	}
	return s.opts.Readdirplus
}

// Served is closed when the serve loop has ended: after Shutdown, or when
// the mount was taken away from outside (umount, fusermount3 -u).
func (s *Server) Served() <-chan struct{} { return s.served }

// Shutdown stops the server: its special mounts are detached
// (Specials.Close), new requests are refused (ENOTCONN), waits
// in flight (lookups on a loader) end with EINTR, live requests are
// drained for at most Options.ShutdownTimeout, and the mount is unmounted
// — lazily if it is busy. It is idempotent and bounded: every call returns
// the first call's result, within about twice the shutdown timeout
// whatever the kernel or the loader do.
func (s *Server) Shutdown() error {
	s.shutdownOnce.Do(func() {
		s.shutdownErr = s.shutdown()
		s.detached() // a view leaves its parent (view.go)
	})
	return s.shutdownErr
}

func (s *Server) shutdown() error {
	start := time.Now()
	// The specials first: they are detached through their own
	// descriptors, and must not outlive the FUSE mount they sit on.
	s.specialsMu.Lock()
	s.specialsShut = true
	sp := s.specials
	s.specialsMu.Unlock()
	spErr := sp.Close()
	close(s.stopping)
	s.sweep.stop()
	<-s.live.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	err := s.live.WaitZero(ctx)
	cancel()
	if err != nil {
		s.log.Warn("shutdown: requests still running at the deadline; unmounting anyway",
			zap.Int64("live", s.live.Count()), zap.Duration("timeout", s.opts.ShutdownTimeout))
	}
	if s.srv == nil {
		return nil
	}
	if s.handedOver.Load() {
		// The successor serves the mount and its specials: only the
		// workers stop.
		if !stopWorker(s.nq, s.notifyDone, 100*time.Millisecond) {
			s.log.Warn("shutdown: notify worker blocked in the kernel; leaving it")
		}
		s.log.Info("stopped; the mount is served by the successor", zap.String("mountpoint", s.mountpoint),
			zap.Duration("took", time.Since(start)))
		return spErr
	}
	uerr := s.unmount()
	// The serve loop ends when the kernel ends the connection. A lazy
	// unmount of a busy mount may keep it: bound the wait.
	t := time.NewTimer(s.opts.ShutdownTimeout)
	select {
	case <-s.served:
	case <-t.C:
		s.log.Warn("shutdown: the kernel kept the connection open (files still open on a lazily unmounted mount); exiting anyway")
	}
	t.Stop()
	if !stopWorker(s.nq, s.notifyDone, 100*time.Millisecond) {
		s.log.Warn("shutdown: notify worker blocked in the kernel; leaving it")
	}
	s.log.Info("unmounted", zap.String("mountpoint", s.mountpoint),
		zap.Duration("took", time.Since(start)), zap.Uint64("refused", s.refused.Load()))
	return errors.Join(spErr, uerr)
}

// unmount takes the mount down: a plain unmount, and a lazy one if that
// fails (EBUSY: a process has its cwd or a file open in it).
func (s *Server) unmount() error {
	select {
	case <-s.served:
		return nil // already gone (unmounted from outside)
	default:
	}
	dir := s.mountpoint
	if s.direct {
		if err := unix.Unmount(dir, 0); err == nil {
			return nil
		} else if err == unix.EINVAL {
			return nil // not mounted any more
		}
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && err != unix.EINVAL {
			return fmt.Errorf("unmount %s: %w", dir, err)
		}
		return nil
	}
	bin, err := lookFusermount()
	if err != nil {
		return fmt.Errorf("unmount %s: %w", dir, err)
	}
	if out, err := exec.Command(bin, "-u", dir).CombinedOutput(); err == nil {
		return nil
	} else {
		s.log.Debug("fusermount -u failed; unmounting lazily", zap.ByteString("output", out), zap.Error(err))
	}
	if out, err := exec.Command(bin, "-u", "-z", dir).CombinedOutput(); err != nil {
		return fmt.Errorf("unmount %s: %s: %v: %s", dir, bin, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// enter counts a request as live, or reports that the server is shutting
// down and the request must be refused.
func (s *Server) enter() bool {
	if s.live.TryGet() {
		return true
	}
	s.refused.Add(1)
	return false
}

// errShutdown is the answer to a request that arrives during shutdown.
const errShutdown = fuse.Status(syscall.ENOTCONN)

// ctx returns the context of a request that may wait.
func (s *Server) ctx(cancel <-chan struct{}, pid uint32) *reqCtx {
	return newReqCtx(cancel, s.stopping, pid)
}

// SyncNotifies waits until the kernel has been sent every notify queued
// so far (see NotifyQueue.Sync for who may call it), or ctx ends — the
// kernels of the server's views too (NewView).
func (s *Server) SyncNotifies(ctx context.Context) error { return s.syncNotifies(ctx) }

// Stats describes the server's state.
type Stats struct {
	KnownNodes  int64 // node ids the kernel holds (root excluded)
	OpenFiles   int   // open file handles
	LiveReqs    int64 // requests being served (a snapshot)
	Refused     uint64
	Panics      uint64
	Notify      NotifyStats
	LookupStats lookup.Stats
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	return Stats{
		KnownNodes: s.nodes.len(), OpenFiles: s.handles.len(),
		LiveReqs: s.liveRequests(), Refused: s.refused.Load(), Panics: s.panics.Load(),
		Notify: s.nq.Stats(), LookupStats: s.res.Stats(),
	}
}

// liveRequests returns the requests being served: the live count less
// its initial reference, which Shutdown drops (sync/refcount).
func (s *Server) liveRequests() int64 {
	n := s.live.Count()
	select {
	case <-s.stopping:
	default:
		n-- // the initial reference
	}
	return max(n, 0)
}

// lookFusermount finds fusermount3, or the older fusermount.
func lookFusermount() (string, error) {
	if p, err := exec.LookPath("fusermount3"); err == nil {
		return p, nil
	}
	return exec.LookPath("fusermount")
}
