// Package control is devfsd's control socket: HTTP/1.1 + JSON on one Unix
// socket, every endpoint under /v1/ (docs/api.md documents each one). It
// serves the control API (register, unregister, list, stat, chmod, chown,
// wait, stats, reload, and the kernel source's info and trigger), the
// event stream, and the helper protocol, through which a helper daemon
// outside the process becomes the module loader (package modload/helper
// holds the loader side).
//
// # Identity and authorization
//
// Who a request comes from is read from the connection, never from the
// request: SO_PEERCRED on the accepted socket gives the pid, uid and gid of
// the process that connected (http.Server.ConnContext stores it in the
// connection's context). Anyone who can connect may read (stat, list,
// wait, events, stats, info); only uid 0, or the configured WriteUID or
// WriteGID, may change the namespace or attach as the helper. Requests
// from the attached helper or its descendants are the loader's own
// (dcache.OriginLoader), so their events are not echoed back to it.
//
// Every refused change — a request to a change endpoint (every POST, and
// attaching as the helper) answered with a 4xx: not allowed, or a bad
// request — is told to Options.Audit before it is answered, with the
// caller's credential, the endpoint, the path or mountpoint its body
// names, the code and the message (package audit logs it, rate-limited).
//
// # Validation
//
// Every body is one JSON object of at most MaxBody bytes whose fields are
// matched exactly (no unknown, duplicate or case-folded keys), each of the
// right JSON type; paths, names, modes, device numbers, owners and targets
// are checked before anything changes. A rejected request changes nothing
// and is answered {"error":{"code":...,"message":...}} with a stable code
// (package wire lists them) and a fitting HTTP status.
//
// # Waiting for the kernel, and when not to (a deadlock rule)
//
// A change made through the socket (register, unregister, chmod, chown,
// and wait's answer) is answered only once the kernel of every mount has
// been sent its notifies (Options.SyncNotifies, bounded by 2 s), so that
// the caller's next system call on the mount sees it. That wait is
// skipped where the notify may be unable to complete before the change is
// answered — while a lookup waits for its loader, the kernel holds the
// lookup's directory, and an entry notify for it waits for the lookup's
// reply: for the attached helper and its descendants, and for whatever
// Options.MustNotWait names (package lookup's "Notifies that cannot be
// delivered": the loader's changes, and changes of a name with a load in
// flight, whose lookup's reply installs the entry). Skipped waits and
// waits that ran out are counted (GET /v1/stats, extra
// notify_wait_skipped and notify_wait_timeouts).
//
// # Lock order
//
// No lock of this package is held across a call into dcache or the helper
// loader. The Hub's locks are leaves taken inside dcache's event delivery.
package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/audit"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload/helper"
)

// Options configures a Server.
type Options struct {
	// Path is the socket's path. Its directory is made (0755) if missing.
	Path string
	// Mode is the socket file's mode; default 0600 (root only).
	Mode os.FileMode
	// WriteUID and WriteGID, if not negative, may change the namespace
	// besides root. If WriteGID is not negative the socket's group is set
	// to it.
	WriteUID, WriteGID int64

	Namespace *dcache.Namespace // required
	Hub       *Hub              // required: the namespace's sink
	// Helper is the helper loader that helpers attach to; nil: the helper
	// endpoints answer not_supported.
	Helper *helper.Loader
	// Fallback names the loader used while no helper is attached, for
	// stats.
	Fallback string
	// SyncNotifies waits until the kernel has been told of every change
	// made so far (fs.Server.SyncNotifies). Changes made through the socket
	// call it before answering, so the caller's next system call on the
	// mount sees them — except the helper's, which may be made while a
	// lookup holds the kernel's directory lock the notify needs. Nil: no
	// wait.
	SyncNotifies func(context.Context) error
	// MustNotWait, if not nil, reports whether a change of path made by
	// c (its Origin as Server.caller gives it) must not wait for
	// SyncNotifies because the notify may be unable to complete until a
	// lookup waiting for its loader ends: lookup.Resolver's
	// MustNotWaitForNotify, the deadlock rule of package lookup's doc.
	// Nil: only the helper's changes skip the wait.
	MustNotWait func(path string, c dcache.Caller) bool
	// Extra returns the counters of the other layers for GET /v1/stats.
	Extra func() map[string]uint64
	// Metrics, if not nil, serves GET /metrics (Prometheus text format),
	// to anyone who can connect.
	Metrics http.Handler
	// Reload, if not nil, reloads the daemon's configuration for POST
	// /v1/reload: it returns what changed, or an error — ErrInvalidConfig
	// wrapped if the configuration was rejected (nothing changed then).
	// Nil: reload answers not_supported.
	Reload func(context.Context) (wire.Reload, error)
	// Journal, if not nil, keeps changes across restarts (package
	// state): a change made through the socket is answered once it is on
	// disk, as one made through the mount.
	Journal interface {
		WaitDurable(ctx context.Context, seq uint64) error
	}
	// Views, if not nil, manages the daemon's views (views.go): GET
	// /v1/views, POST /v1/views/add and /v1/views/remove (root only).
	Views Views
	// Kernel, if not nil, is the kernel device source (devices: kernel):
	// GET /v1/info and POST /v1/trigger. Nil: info answers not_found and
	// trigger not_supported.
	Kernel Kernel
	// Audit, if not nil, is told of every refused change (audit.Auditor).
	Audit interface{ Refused(audit.Refusal) }
	// Upgrade, if not nil, replaces the daemon by a new process of
	// binary ("": the running one's) serving the same mounts, for POST
	// /v1/upgrade (root only): it returns once the successor serves, or
	// with why it does not (the daemon then goes on). Nil: upgrade
	// answers not_supported.
	Upgrade func(ctx context.Context, binary string) (wire.Upgrade, error)
	// Listener, if not nil, is the socket, handed over by a predecessor
	// (Server.Handover): it is served as it is, at Path, and nothing is
	// made or probed there.
	Listener *net.UnixListener
	// MaxSubscribers bounds concurrent event streams and waits; default 64.
	MaxSubscribers int
	// Logger; nil: none.
	Logger *zap.Logger
}

// Server is the control socket.
type Server struct {
	opts Options
	log  *zap.Logger

	// Who may write besides root, and the fallback's name; a reload
	// changes them while requests are served.
	writeUID, writeGID atomic.Int64
	fallback           atomic.Pointer[string]

	ln    *net.UnixListener
	ino   uint64 // the socket file's inode, to remove only our own
	http  *httpServer
	base  context.Context
	stop  context.CancelFunc
	slots chan struct{} // one token per event stream or wait

	// The waits for kernel notifies (synced): skipped by the deadlock
	// rule, or ended by syncTimeout.
	syncSkipped, syncTimeouts atomic.Uint64

	shutOnce sync.Once
	shutErr  error
}

type credKey struct{}

// Cred is a connection's peer credential.
type Cred struct {
	dcache.Caller      // Pid, Uid, Gid; Origin is set by Server.caller
	OK            bool // false: SO_PEERCRED failed; the peer may only read
}

func credOf(r *http.Request) Cred {
	c, _ := r.Context().Value(credKey{}).(Cred)
	return c
}

// peerCred reads SO_PEERCRED from c.
func peerCred(c net.Conn) Cred {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Cred{}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Cred{}
	}
	var cred Cred
	_ = raw.Control(func(fd uintptr) {
		u, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err == nil {
			cred = Cred{Caller: dcache.Caller{Pid: uint32(u.Pid), Uid: u.Uid, Gid: u.Gid}, OK: true}
		}
	})
	return cred
}

// ErrInUse is Listen's error when another process answers on the socket.
var ErrInUse = errors.New("control: another process answers on the socket")

// Listen creates the socket: a stale socket file (nothing answers on it)
// is replaced; a live one is ErrInUse; any other file there is an error.
// The socket is not served until Serve.
func Listen(opts Options) (*Server, error) {
	if opts.Namespace == nil || opts.Hub == nil {
		return nil, errors.New("control: Listen needs a Namespace and a Hub")
	}
	if opts.Mode == 0 {
		opts.Mode = 0600
	}
	if opts.MaxSubscribers <= 0 {
		opts.MaxSubscribers = 64
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	ln, st, err := listen(opts)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: log, ln: ln, ino: st.Ino,
		slots: make(chan struct{}, opts.MaxSubscribers)}
	s.writeUID.Store(opts.WriteUID)
	s.writeGID.Store(opts.WriteGID)
	s.SetFallback(opts.Fallback)
	s.base, s.stop = context.WithCancel(context.Background())
	s.http = &httpServer{
		handler:           s,
		readHeaderTimeout: 10 * time.Second,
		idleTimeout:       2 * time.Minute,
		maxHeaderBytes:    16 << 10,
		base:              s.base,
		connContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, credKey{}, peerCred(c))
		},
		log: log.Named("http"),
	}
	return s, nil
}

// listen makes the socket (or takes opts.Listener) and returns it with
// the stat of its file.
func listen(opts Options) (*net.UnixListener, unix.Stat_t, error) {
	var st unix.Stat_t
	if ln := opts.Listener; ln != nil {
		ln.SetUnlinkOnClose(false)
		if err := unix.Lstat(opts.Path, &st); err != nil {
			return nil, st, fmt.Errorf("control: the socket handed over: %w", err)
		}
		return ln, st, nil
	}
	if err := os.MkdirAll(filepath.Dir(opts.Path), 0755); err != nil {
		return nil, st, fmt.Errorf("control: %w", err)
	}
	if err := removeStale(opts.Path); err != nil {
		return nil, st, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: opts.Path, Net: "unix"})
	if err != nil {
		return nil, st, fmt.Errorf("control: %w", err)
	}
	ln.SetUnlinkOnClose(false) // Shutdown removes the file, if still ours
	fail := func(err error) (*net.UnixListener, unix.Stat_t, error) {
		ln.Close()
		os.Remove(opts.Path)
		return nil, st, fmt.Errorf("control: %s: %w", opts.Path, err)
	}
	if err := os.Chmod(opts.Path, opts.Mode); err != nil {
		return fail(err)
	}
	if opts.WriteGID >= 0 {
		if err := os.Lchown(opts.Path, -1, int(opts.WriteGID)); err != nil {
			return fail(err)
		}
	}
	if err := unix.Lstat(opts.Path, &st); err != nil {
		return fail(err)
	}
	return ln, st, nil
}

// removeStale removes a socket file at path that nothing answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("control: %s exists and is not a socket; not replacing it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: %s (is another devfsd running?)", ErrInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("control: probing %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("control: removing the stale socket: %w", err)
	}
	return nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.opts.Path }

// Serve serves the socket in a goroutine until Shutdown.
func (s *Server) Serve() {
	go func() {
		if err := s.http.serve(s.ln); err != nil && !errors.Is(err, errServerClosed) {
			s.log.Error("control socket stopped", zap.Error(err))
		}
	}()
}

// Shutdown stops the server: streams and waits end, live requests get
// until ctx ends, then every connection is closed and the socket file
// removed (if it is still ours). Idempotent; bounded by ctx: if ctx ends
// first, the connections still answering are closed and its error is
// returned.
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutOnce.Do(func() {
		s.stop() // ends event streams, helper streams and waits
		err := s.http.shutdown(ctx)
		if err != nil {
			s.http.close() // ctx ended: the rest are cut off
		}
		s.ln.Close()
		var st unix.Stat_t
		if unix.Lstat(s.opts.Path, &st) == nil && st.Ino == s.ino {
			os.Remove(s.opts.Path)
		}
		s.shutErr = err
	})
	return s.shutErr
}

// canWrite reports whether c may change the namespace.
func (s *Server) canWrite(c Cred) bool {
	if !c.OK {
		return false
	}
	uid, gid := s.writeUID.Load(), s.writeGID.Load()
	return c.Uid == 0 || (uid >= 0 && int64(c.Uid) == uid) || (gid >= 0 && int64(c.Gid) == gid)
}

// SetWriters changes who may write besides root (a reload): requests
// arriving from now on are judged by the new uid and gid (-1: none), and
// the socket file's group becomes gid (root's group for -1).
func (s *Server) SetWriters(uid, gid int64) error {
	s.writeUID.Store(uid)
	old := s.writeGID.Swap(gid)
	if old == gid {
		return nil
	}
	g := int(max(gid, 0))
	if err := os.Lchown(s.opts.Path, -1, g); err != nil {
		return fmt.Errorf("control: %s: %w", s.opts.Path, err)
	}
	return nil
}

// SetFallback changes the fallback loader's name shown by stats.
func (s *Server) SetFallback(name string) { s.fallback.Store(&name) }

// ErrInvalidConfig marks a reload refused because the new configuration
// is invalid; Options.Reload wraps it.
var ErrInvalidConfig = errors.New("invalid configuration")

// fromHelper reports whether c is the attached helper or its descendant.
func (s *Server) fromHelper(c Cred) bool {
	return c.OK && s.opts.Helper != nil && s.opts.Helper.IsHelper(c.Pid)
}

// caller is the dcache.Caller of a change made by c.
func (s *Server) caller(c Cred) dcache.Caller {
	o := dcache.OriginControl
	if s.fromHelper(c) {
		o = dcache.OriginLoader
	}
	cc := c.Caller
	cc.Origin = o
	return cc
}

// route is one endpoint.
type route struct {
	method string
	write  bool // needs write authorization
	h      func(*Server, http.ResponseWriter, *http.Request) *apiError
}

var routes = map[string]route{
	"/v1/stat":         {http.MethodGet, false, (*Server).handleStat},
	"/v1/list":         {http.MethodGet, false, (*Server).handleList},
	"/v1/register":     {http.MethodPost, true, (*Server).handleRegister},
	"/v1/unregister":   {http.MethodPost, true, (*Server).handleUnregister},
	"/v1/chmod":        {http.MethodPost, true, (*Server).handleChmod},
	"/v1/chown":        {http.MethodPost, true, (*Server).handleChown},
	"/v1/wait":         {http.MethodGet, false, (*Server).handleWait},
	"/v1/events":       {http.MethodGet, false, (*Server).handleEvents},
	"/v1/stats":        {http.MethodGet, false, (*Server).handleStats},
	"/v1/reload":       {http.MethodPost, true, (*Server).handleReload},
	"/v1/info":         {http.MethodGet, false, (*Server).handleInfo},
	"/v1/trigger":      {http.MethodPost, true, (*Server).handleTrigger},
	"/v1/helper":       {http.MethodGet, true, (*Server).handleHelper},
	"/v1/helper/done":  {http.MethodPost, false, (*Server).handleDone},
	"/v1/views":        {http.MethodGet, false, (*Server).handleViews},
	"/v1/views/add":    {http.MethodPost, true, (*Server).handleViewAdd},    // root only
	"/v1/views/remove": {http.MethodPost, true, (*Server).handleViewRemove}, // root only
	"/v1/upgrade":      {http.MethodPost, true, (*Server).handleUpgrade},    // root only
}

// ServeHTTP routes a request and answers its error, if any.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/metrics" && s.opts.Metrics != nil {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", http.MethodGet)
			writeError(w, errf(http.StatusMethodNotAllowed, wire.CodeMethod, "", "/metrics takes GET, not %s", r.Method))
			return
		}
		s.opts.Metrics.ServeHTTP(w, r)
		return
	}
	rt, ok := routes[r.URL.Path]
	if !ok {
		writeError(w, errf(http.StatusNotFound, wire.CodeUnknownEndpoint, "", "no endpoint %s", r.URL.Path))
		return
	}
	if r.Method != rt.method && !(rt.method == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", rt.method)
		writeError(w, errf(http.StatusMethodNotAllowed, wire.CodeMethod, "", "%s takes %s, not %s", r.URL.Path, rt.method, r.Method))
		return
	}
	if s.base.Err() != nil {
		writeError(w, errf(http.StatusServiceUnavailable, wire.CodeShuttingDown, "", "the daemon is stopping"))
		return
	}
	c := credOf(r)
	// A change's body is read first, so that a refusal can say what it
	// would have changed; the handler reads it again from memory.
	change := rt.write || rt.method == http.MethodPost
	var body []byte
	if change && r.Method == http.MethodPost {
		b, e := readBody(r)
		if e != nil {
			s.refused(r, c, nil, e)
			writeError(w, e)
			return
		}
		body = b
		r.Body = &readBodyOf{Reader: bytes.NewReader(b), b: b}
	}
	if rt.write && !s.canWrite(c) {
		e := errf(http.StatusForbidden, wire.CodePermission, "",
			"uid %d may not change the namespace (root or the configured control_uid/control_gid only)", c.Uid)
		s.refused(r, c, body, e)
		writeError(w, e)
		return
	}
	if e := rt.h(s, w, r); e != nil {
		if change && e.status < 500 {
			s.refused(r, c, body, e)
		}
		if e.status >= 500 {
			s.log.Error("control request failed", zap.String("path", r.URL.Path), zap.Error(e))
		} else {
			s.log.Debug("control request rejected", zap.String("path", r.URL.Path),
				zap.Uint32("pid", c.Pid), zap.Uint32("uid", c.Uid), zap.Error(e))
		}
		writeError(w, e)
	}
}

// refused audits a change c asked for with body and that was answered e
// (a 4xx): before the answer, while the caller still waits for it (its
// comm is read then).
func (s *Server) refused(r *http.Request, c Cred, body []byte, e *apiError) {
	if s.opts.Audit == nil {
		return
	}
	s.opts.Audit.Refused(audit.Refusal{Pid: c.Pid, Uid: c.Uid, Gid: c.Gid, Endpoint: r.URL.Path,
		Path: bodyPath(body), Code: e.body.Code, Why: e.body.Message})
}

// bodyPath is what a change's body names, best effort, for the audit
// line of a refusal: its "path" or "mountpoint" field as a wire.Name,
// or, for a string JSON cannot carry exactly, the bytes between its
// quotes; "" if none.
func bodyPath(body []byte) string {
	var o map[string]json.RawMessage
	if len(body) == 0 || json.Unmarshal(body, &o) != nil {
		return ""
	}
	for _, k := range []string{"path", "mountpoint"} {
		raw, ok := o[k]
		if !ok {
			continue
		}
		var n wire.Name
		if n.UnmarshalJSON(raw) == nil {
			return string(n)
		}
		if len(raw) >= 2 && raw[0] == '"' {
			return string(raw[1 : len(raw)-1])
		}
	}
	return ""
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, wire.ErrorBody{Error: e.body})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeEncoded(w, status, encodeJSON(v))
}

// encodeJSON is v as json.Marshal writes it, with a newline; an answer
// that cannot be encoded is the internal error's body.
func encodeJSON(v any) encoded {
	switch v := v.(type) {
	case wire.Node:
		if b, ok := v.AppendJSON(make([]byte, 0, 256)); ok {
			return encoded{b: append(b, '\n')}
		}
	case wire.DoneAnswer:
		if b, ok := appendDoneAnswer(make([]byte, 0, 64+256*len(v.Registered)), &v); ok {
			return encoded{b: append(b, '\n')}
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return encoded{b: []byte(`{"error":{"code":"internal","message":"encoding the answer failed"}}` + "\n"), failed: true}
	}
	return encoded{b: append(b, '\n')}
}

// appendDoneAnswer appends a as json.Marshal writes it and reports true,
// or reports false where it leaves that to json.Marshal (a name skipped
// as existing, or a node Node.AppendJSON declines).
func appendDoneAnswer(b []byte, a *wire.DoneAnswer) ([]byte, bool) {
	if len(a.Existing) > 0 {
		return b, false
	}
	b = append(b, `{"id":`...)
	b = strconv.AppendUint(b, a.ID, 10)
	if len(a.Registered) > 0 {
		b = append(b, `,"registered":[`...)
		for i := range a.Registered {
			if i > 0 {
				b = append(b, ',')
			}
			var ok bool
			if b, ok = a.Registered[i].AppendJSON(b); !ok {
				return b, false
			}
		}
		b = append(b, ']')
	}
	if a.Late {
		b = append(b, `,"late":true`...)
	}
	return append(b, '}'), true
}

// encoded is an answer's body, encoded.
type encoded struct {
	b      []byte
	failed bool // the answer is an internal error
}

func writeEncoded(w http.ResponseWriter, status int, e encoded) {
	if e.failed {
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(e.b)
}

// errnoError maps a dcache error to an API error.
func errnoError(err error) *apiError {
	var no syscall.Errno
	if !errors.As(err, &no) {
		return errf(http.StatusInternalServerError, wire.CodeInternal, "", "%v", err)
	}
	switch no {
	case syscall.ENOENT:
		return errf(http.StatusNotFound, wire.CodeNotFound, "path", "%v", err)
	case syscall.EEXIST:
		return errf(http.StatusConflict, wire.CodeExists, "path", "%v", err)
	case syscall.ENOTDIR:
		return errf(http.StatusConflict, wire.CodeNotDir, "path", "%v", err)
	case syscall.EBUSY:
		return errf(http.StatusConflict, wire.CodeBusy, "path", "%v", err)
	case syscall.ENOSPC:
		return errf(http.StatusInsufficientStorage, wire.CodeNoSpace, "path", "%v", err)
	case syscall.ENAMETOOLONG:
		return bad(wire.CodeNameTooLong, "path", "%v", err)
	case syscall.EINVAL:
		return bad(wire.CodeInvalidArgument, "", "%v", err)
	}
	return errf(http.StatusInternalServerError, wire.CodeInternal, "", "%v", err)
}
