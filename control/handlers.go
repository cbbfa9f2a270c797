package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload/helper"
)

// syncTimeout bounds how long a change waits for the kernel to be told.
const syncTimeout = 2 * time.Second

// query parses r's query: every key in known, none twice.
func query(r *http.Request, known ...string) (url.Values, *apiError) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, bad(wire.CodeInvalidArgument, "", "bad query: %v", err)
	}
	for k, v := range q {
		if !contains(known, k) {
			return nil, bad(wire.CodeUnknownField, k, "unknown parameter %q (this endpoint takes %s)", k, strings.Join(known, ", "))
		}
		if len(v) > 1 {
			return nil, bad(wire.CodeDuplicateField, k, "parameter %q given twice", k)
		}
	}
	return q, nil
}

// pathOnlyQuery reads a request whose query is one required path.
func pathOnlyQuery(r *http.Request) (string, *apiError) {
	q, e := query(r, "path")
	if e != nil {
		return "", e
	}
	return queryPath(q, true)
}

func queryPath(q url.Values, required bool) (string, *apiError) {
	if _, ok := q["path"]; !ok && required {
		return "", bad(wire.CodeMissingField, "path", "path is required")
	}
	p := q.Get("path")
	return p, checkPath("path", p, true)
}

func queryBool(q url.Values, k string) (bool, *apiError) {
	switch q.Get(k) {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	}
	return false, bad(wire.CodeInvalidArgument, k, "%s must be true or false", k)
}

func queryDuration(q url.Values, k string, def, max time.Duration) (time.Duration, *apiError) {
	v := q.Get(k)
	if v == "" {
		return def, nil
	}
	cd, err := config.ParseDuration(v)
	d := time.Duration(cd)
	if err != nil || d <= 0 || d > max {
		return 0, bad(wire.CodeInvalidArgument, k, "%s %q must be a duration in (0, %v], such as 5s", k, v, max)
	}
	return d, nil
}

func queryInt(q url.Values, k string, def, lo, hi int) (int, *apiError) {
	v := q.Get(k)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, bad(wire.CodeInvalidArgument, k, "%s %q must be an integer in [%d, %d]", k, v, lo, hi)
	}
	return n, nil
}

func nodeOf(path string, n *dcache.Node) wire.Node {
	return nodeOfAttr(path, n, n.Attr())
}

// nodeOfAttr is the wire.Node of n at path with attributes a (n's, read
// earlier).
func nodeOfAttr(path string, n *dcache.Node, a dcache.Attr) wire.Node {
	w := wire.Node{Path: path, Type: a.Type.String(), Mode: octal4(a.Mode & dcache.PermMask),
		Uid: a.Uid, Gid: a.Gid, Ino: a.Ino, Nlink: a.Nlink, Size: a.Size,
		Mtime: a.Mtime.UTC().Format(time.RFC3339Nano), Ctime: a.Ctime.UTC().Format(time.RFC3339Nano)}
	switch a.Type {
	case dcache.TypeChar, dcache.TypeBlock:
		w.Major, w.Minor = a.Major, a.Minor
	case dcache.TypeSymlink:
		w.Target, _ = n.Readlink()
	}
	return w
}

// octal4 is m as fmt's "%04o" writes it.
func octal4(m uint32) string {
	var b [12]byte
	d := strconv.AppendUint(b[:0], uint64(m), 8)
	if len(d) >= 4 {
		return string(d)
	}
	var p [4]byte
	k := copy(p[4-len(d):], d)
	for i := 0; i < 4-k; i++ {
		p[i] = '0'
	}
	return string(p[:])
}

func (s *Server) handleStat(w http.ResponseWriter, r *http.Request) *apiError {
	p, e := pathOnlyQuery(r)
	if e != nil {
		return e
	}
	n, err := s.opts.Namespace.Resolve(p)
	if err != nil {
		return errnoError(err)
	}
	writeJSON(w, http.StatusOK, nodeOf(p, n))
	return nil
}

// maxList bounds the nodes one list answers with.
const maxList = 1 << 20

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) *apiError {
	q, e := query(r, "path", "recursive")
	if e != nil {
		return e
	}
	p, e := queryPath(q, false)
	if e != nil {
		return e
	}
	rec, e := queryBool(q, "recursive")
	if e != nil {
		return e
	}
	n, err := s.opts.Namespace.Resolve(p)
	if err != nil {
		return errnoError(err)
	}
	out := wire.List{Path: p, Nodes: []wire.Node{}}
	if !n.IsDir() {
		out.Nodes = append(out.Nodes, nodeOf(p, n))
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	var walk func(dir *dcache.Node, dirPath string)
	walk = func(dir *dcache.Node, dirPath string) {
		var off uint64
		for len(out.Nodes) < maxList {
			ents, err := dir.ReadDir(off, 1024)
			if err != nil || len(ents) == 0 {
				return
			}
			for _, de := range ents {
				off = de.Cookie
				if de.Name == "." || de.Name == ".." {
					continue
				}
				child, err := dir.Lookup(de.Name)
				if err != nil {
					continue // removed meanwhile
				}
				cp := de.Name
				if dirPath != "" {
					cp = dirPath + "/" + de.Name
				}
				out.Nodes = append(out.Nodes, nodeOf(cp, child))
				if rec && child.IsDir() {
					walk(child, cp)
				}
			}
		}
	}
	walk(n, p)
	writeJSON(w, http.StatusOK, out)
	return nil
}

// synced waits, bounded, until the kernel has been told of the changes so
// far, so that c's next system call on the mount sees them — unless the
// wait may be for a notify that cannot be delivered: c is the helper, or
// Options.MustNotWait says so for c or one of paths, the names the change
// made or removed (the deadlock rule "Notifies that cannot be delivered"
// of package lookup's doc). Both outcomes are counted for GET /v1/stats.
func (s *Server) synced(ctx context.Context, c Cred, paths ...string) {
	if s.opts.SyncNotifies == nil {
		return
	}
	if s.mustNotWait(c, paths) {
		s.syncSkipped.Add(1)
		return
	}
	// A done context asks whether every notify is sent already (Sync
	// returns nil then without looking at it): the common case once the
	// answer is encoded, and then no timer is made.
	if s.opts.SyncNotifies(doneCtx) == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	if err := s.opts.SyncNotifies(ctx); err != nil {
		s.syncTimeouts.Add(1)
		s.log.Warn("kernel notifies not sent in time; the mount may show the old state until the cache timeouts",
			zap.Error(err))
	}
}

// doneCtx is a context already done.
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// mustNotWait reports whether a change of paths by c must not wait for
// its notifies: c is the helper, or Options.MustNotWait says so.
func (s *Server) mustNotWait(c Cred, paths []string) bool {
	who := s.caller(c)
	if who.Origin == dcache.OriginLoader {
		return true // the helper or its descendant
	}
	if s.opts.MustNotWait == nil {
		return false
	}
	for _, p := range paths {
		if s.opts.MustNotWait(p, who) {
			return true
		}
	}
	return false
}

// changed answers a change c made of paths that succeeded: only once it
// is kept (durable) and the kernel has been told of it (synced), so that
// the caller's next request, or system call on the mount, sees it.
func (s *Server) changed(w http.ResponseWriter, r *http.Request, c Cred, status int, v any, paths ...string) *apiError {
	b := encodeJSON(v) // while the notify worker tells the kernel
	if e := s.durable(r.Context()); e != nil {
		return e
	}
	s.synced(r.Context(), c, paths...)
	writeEncoded(w, status, b)
	return nil
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) *apiError {
	body, e := readBody(r)
	if e != nil {
		return e
	}
	reg, e := decodeRegister(body)
	if e != nil {
		return e
	}
	c := credOf(r)
	n, err := s.opts.Namespace.Register(reg.Path, reg.Spec, s.caller(c))
	if err != nil {
		return errnoError(err)
	}
	return s.changed(w, r, c, http.StatusCreated, nodeOf(reg.Path, n), reg.Path)
}

func (s *Server) handleUnregister(w http.ResponseWriter, r *http.Request) *apiError {
	body, e := readBody(r)
	if e != nil {
		return e
	}
	p, e := decodePath(body)
	if e != nil {
		return e
	}
	c := credOf(r)
	if err := s.opts.Namespace.Unregister(p, s.caller(c)); err != nil {
		return errnoError(err)
	}
	return s.changed(w, r, c, http.StatusOK, wire.PathRequest{Path: p}, p)
}

func (s *Server) setAttr(w http.ResponseWriter, r *http.Request, p string, in dcache.SetAttrIn) *apiError {
	n, err := s.opts.Namespace.Resolve(p)
	if err != nil {
		return errnoError(err)
	}
	c := credOf(r)
	if _, err := n.SetAttr(in, s.caller(c)); err != nil {
		return errnoError(err)
	}
	return s.changed(w, r, c, http.StatusOK, nodeOf(p, n), p)
}

func (s *Server) handleChmod(w http.ResponseWriter, r *http.Request) *apiError {
	body, e := readBody(r)
	if e != nil {
		return e
	}
	p, mode, e := decodeChmod(body)
	if e != nil {
		return e
	}
	return s.setAttr(w, r, p, dcache.SetAttrIn{Valid: dcache.SetMode, Mode: mode})
}

func (s *Server) handleChown(w http.ResponseWriter, r *http.Request) *apiError {
	body, e := readBody(r)
	if e != nil {
		return e
	}
	c, e := decodeChown(body)
	if e != nil {
		return e
	}
	var in dcache.SetAttrIn
	if c.Uid != nil {
		in.Valid |= dcache.SetUid
		in.Uid = *c.Uid
	}
	if c.Gid != nil {
		in.Valid |= dcache.SetGid
		in.Gid = *c.Gid
	}
	return s.setAttr(w, r, c.Path, in)
}

// slot takes one of the stream/wait slots.
func (s *Server) slot() (release func(), e *apiError) {
	select {
	case s.slots <- struct{}{}:
		return func() { <-s.slots }, nil
	default:
		return nil, errf(http.StatusServiceUnavailable, wire.CodeTooManyConsumers, "",
			"%d event streams and waits are open already", cap(s.slots))
	}
}

// Wait bounds.
const (
	defaultWait = 5 * time.Second
	maxWait     = time.Hour
)

func (s *Server) handleWait(w http.ResponseWriter, r *http.Request) *apiError {
	q, e := query(r, "path", "timeout")
	if e != nil {
		return e
	}
	p, e := queryPath(q, true)
	if e != nil {
		return e
	}
	timeout, e := queryDuration(q, "timeout", defaultWait, maxWait)
	if e != nil {
		return e
	}
	release, e := s.slot()
	if e != nil {
		return e
	}
	defer release()
	start := time.Now()
	// Subscribe before looking, so that no registration falls between.
	sub := s.opts.Hub.Subscribe(64, func(ev *dcache.Event) bool {
		return (ev.Kind == dcache.KindRegister || ev.Kind == dcache.KindCreate) &&
			(ev.Path == p || strings.HasPrefix(p, ev.Path+"/"))
	})
	defer sub.Close()
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		if n, err := s.opts.Namespace.Resolve(p); err == nil {
			s.synced(r.Context(), credOf(r), p)
			writeJSON(w, http.StatusOK, wire.Wait{Node: nodeOf(p, n), Elapsed: time.Since(start).String()})
			return nil
		}
		select {
		case <-sub.Ready():
			sub.Take()
		case <-t.C:
			return errf(http.StatusGatewayTimeout, wire.CodeTimeout, "path", "%q did not appear within %v", p, timeout)
		case <-r.Context().Done():
			return errf(http.StatusServiceUnavailable, wire.CodeShuttingDown, "", "the wait was cut short")
		}
	}
}

// Event stream buffer bounds.
const (
	defaultBuffer = 1024
	maxBuffer     = 1 << 16
)

func eventRecord(it item) wire.Record {
	ev := &it.ev
	rec := wire.Record{Type: "event", Seq: ev.Seq, Time: it.at.UTC().Format(time.RFC3339Nano),
		Kind: ev.Kind.String(), Path: ev.Path, Origin: ev.Caller.Origin.String(), Pid: ev.Caller.Pid}
	if ev.Kind != dcache.KindLookup {
		rec.NodeType = ev.Type.String()
		rec.Mode = octal4(ev.Mode & dcache.PermMask)
		rec.Uid, rec.Gid = ev.Uid, ev.Gid
		if ev.Type.Device() {
			rec.Major, rec.Minor = ev.Major, ev.Minor
		}
	}
	return rec
}

func overrunRecord(ov Overrun) wire.Record {
	return wire.Record{Type: "overrun", Missed: ov.Missed, FirstSeq: ov.FirstSeq, LastSeq: ov.LastSeq}
}

// stream writes NDJSON records to w, flushing after each batch.
type stream struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	enc *json.Encoder
	buf []byte // a record being written, reused
}

func startStream(w http.ResponseWriter) *stream {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	st := &stream{w: w, rc: http.NewResponseController(w), enc: json.NewEncoder(w)}
	st.flush()
	return st
}

// write writes rec as one line: wire.Record.AppendJSON's bytes, or
// json's for a record it declines.
func (st *stream) write(rec wire.Record) error {
	b, ok := rec.AppendJSON(st.buf[:0])
	if !ok {
		return st.enc.Encode(rec)
	}
	st.buf = append(b, '\n')
	_, err := st.w.Write(st.buf)
	return err
}
func (st *stream) flush() error { return st.rc.Flush() }

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) *apiError {
	q, e := query(r, "buffer")
	if e != nil {
		return e
	}
	buf, e := queryInt(q, "buffer", defaultBuffer, 1, maxBuffer)
	if e != nil {
		return e
	}
	release, e := s.slot()
	if e != nil {
		return e
	}
	defer release()
	sub := s.opts.Hub.Subscribe(buf, nil)
	defer sub.Close()
	st := startStream(w)
	for {
		select {
		case <-sub.Ready():
		case <-r.Context().Done():
			return nil
		}
		items, ov := sub.Take()
		for _, it := range items {
			if st.write(eventRecord(it)) != nil {
				return nil
			}
		}
		if ov.Missed > 0 && st.write(overrunRecord(ov)) != nil {
			return nil
		}
		if st.flush() != nil {
			return nil
		}
	}
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) *apiError {
	if _, e := query(r); e != nil {
		return e
	}
	fs := s.opts.Namespace.Statfs()
	hs := s.opts.Hub.Stats()
	out := wire.Stats{Nodes: fs.Nodes, MaxNodes: fs.MaxNodes, Bytes: fs.Bytes, MaxBytes: fs.MaxBytes,
		Events: wire.EventStats{LastSeq: hs.LastSeq, Subscribers: hs.Subscribers,
			Delivered: hs.Delivered, Missed: hs.Missed},
		Fallback: *s.fallback.Load()}
	if s.opts.Helper != nil {
		h := s.opts.Helper.Stats()
		out.Helper = wire.HelperStats{Attached: h.Attached, Pid: h.Pid, Sessions: h.Sessions, Sent: h.Sent,
			Answered: h.Answered, AnsweredRegistering: h.AnsweredRegistering, TimedOut: h.TimedOut, Aborted: h.Aborted, Refused: h.Refused}
	}
	if s.opts.Extra != nil {
		out.Extra = s.opts.Extra()
	}
	if out.Extra == nil {
		out.Extra = map[string]uint64{}
	}
	out.Extra["notify_wait_skipped"] = s.syncSkipped.Load()
	out.Extra["notify_wait_timeouts"] = s.syncTimeouts.Load()
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) *apiError {
	if s.opts.Reload == nil {
		return errf(http.StatusNotImplemented, wire.CodeNotSupported, "",
			"this daemon cannot reload its configuration; restart it to apply a new one")
	}
	if r.ContentLength != 0 {
		body, e := readBody(r)
		if e != nil {
			return e
		}
		if _, e := decodeObject(body); e != nil { // {} or nothing: reload takes no fields
			return e
		}
	}
	c := credOf(r)
	res, err := s.opts.Reload(r.Context())
	if errors.Is(err, ErrInvalidConfig) {
		s.log.Warn("reload refused: the configuration is invalid; the running one stays",
			zap.Uint32("pid", c.Pid), zap.Error(err))
		return bad(wire.CodeInvalidConfig, "", "%v", err)
	}
	if err != nil {
		return errf(http.StatusInternalServerError, wire.CodeInternal, "", "%v", err)
	}
	if res.Changed == nil {
		res.Changed = []string{}
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// durable waits until the changes so far are kept (Options.Journal).
func (s *Server) durable(ctx context.Context) *apiError {
	if s.opts.Journal == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, syncTimeout*5)
	defer cancel()
	if err := s.opts.Journal.WaitDurable(ctx, s.opts.Namespace.LastSeq()); err != nil {
		return errf(http.StatusInternalServerError, wire.CodeInternal, "", "the change was made but cannot be kept: %v", err)
	}
	return nil
}

// helperConn is the helper loader's transport to one helper stream.
type helperConn struct {
	reqs chan helper.Request
}

func (hc *helperConn) Send(r helper.Request) bool {
	select {
	case hc.reqs <- r:
		return true
	default:
		return false
	}
}

// helperQueue bounds the LOOKUP requests queued for a helper.
const helperQueue = 4096

func (s *Server) handleHelper(w http.ResponseWriter, r *http.Request) *apiError {
	if s.opts.Helper == nil {
		return errf(http.StatusNotImplemented, wire.CodeNotSupported, "", "this daemon takes no helper")
	}
	q, e := query(r, "buffer")
	if e != nil {
		return e
	}
	buf, e := queryInt(q, "buffer", defaultBuffer, 1, maxBuffer)
	if e != nil {
		return e
	}
	c := credOf(r)
	hc := &helperConn{reqs: make(chan helper.Request, helperQueue)}
	sess, err := s.opts.Helper.Attach(c.Caller, hc)
	if errors.Is(err, helper.ErrAttached) {
		id, _ := s.opts.Helper.Attached()
		return errf(http.StatusConflict, wire.CodeHelperAttached, "", "a helper is attached already (pid %d)", id.Pid)
	}
	if err != nil {
		return errf(http.StatusInternalServerError, wire.CodeInternal, "", "%v", err)
	}
	defer sess.Detach("the helper's connection closed")
	// The helper's own changes (OriginLoader) are not echoed to it; nor
	// are LOOKUP events, which it receives as requests.
	sub := s.opts.Hub.Subscribe(buf, func(ev *dcache.Event) bool {
		return ev.Kind != dcache.KindLookup && ev.Caller.Origin != dcache.OriginLoader
	})
	defer sub.Close()
	st := startStream(w)
	if st.write(wire.Record{Type: "hello", Pid: c.Pid, Uid: c.Uid, Gid: c.Gid}) != nil || st.flush() != nil {
		return nil
	}
	for {
		select {
		case req := <-hc.reqs:
			dir := req.Dir
			if st.write(wire.Record{Type: "lookup", ID: req.ID, Dir: &dir, Name: req.Name,
				Path:   joinPath(req.Dir, req.Name),
				Caller: &req.Caller}) != nil {
				return nil
			}
		case <-sub.Ready():
			items, ov := sub.Take()
			// Changes the helper made through the mount are its own too.
			// A batch's events are asked about once per caller in a row:
			// one taken batch is one instant for the question.
			var lastPid uint32
			asked, lastMine := false, false
			for _, it := range items {
				if c := it.ev.Caller; c.Origin == dcache.OriginFUSE {
					if !asked || c.Pid != lastPid {
						asked, lastPid, lastMine = true, c.Pid, s.opts.Helper.IsHelper(c.Pid)
					}
					if lastMine {
						continue
					}
				}
				if st.write(eventRecord(it)) != nil {
					return nil
				}
			}
			if ov.Missed > 0 && st.write(overrunRecord(ov)) != nil {
				return nil
			}
		case <-sess.Gone():
			return nil
		case <-r.Context().Done():
			return nil
		}
		if st.flush() != nil {
			return nil
		}
	}
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}
