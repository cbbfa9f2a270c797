package control

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// The control socket's HTTP/1.1 server. It serves an http.Handler as
// net/http's Server does — keep-alive, chunked bodies both ways,
// Expect: 100-continue, a bound on the request header and a timeout to
// read it, an idle timeout, graceful Shutdown, a context per request
// that ends when the client goes away — with one difference, the reason
// it exists: net/http starts a goroutine on every request to notice the
// client closing the connection, and ends it after the handler, which
// costs every request two thread wake-ups (futex) and two epoll waits.
// On the control socket, where a register is answered in tens of
// microseconds, that was a quarter of the round trip. Here that watch
// starts only for a request still running after watchAfter (a stream, a
// wait, an upgrade): a request answered sooner cannot have needed it.
//
// Contracts beyond net/http's that the handlers rely on: a response that
// fits in respBuf is sent with Content-Length in one write when the
// handler returns; one that does not, or that is flushed (http.Flusher
// or http.ResponseController), is chunked. A handler's panic is logged
// and closes the connection, as net/http does.

const (
	// respBuf is what a response may hold before its header is sent.
	respBuf = 4 << 10
	// watchAfter is how long a request runs before the server watches
	// its connection for the client going away (and ends its context).
	watchAfter = 2 * time.Millisecond
	// maxDrain is how much of a body the handler did not read is read
	// and dropped to keep the connection; more closes it.
	maxDrain = 256 << 10
)

// errServerClosed is serve's answer once Shutdown or Close has run.
var errServerClosed = errors.New("control: server closed")

// httpServer serves an http.Handler on a listener, one goroutine per
// connection.
type httpServer struct {
	handler           http.Handler
	base              context.Context
	connContext       func(context.Context, net.Conn) context.Context
	readHeaderTimeout time.Duration
	idleTimeout       time.Duration
	maxHeaderBytes    int
	log               *zap.Logger
	// connState, if not nil, is told of every connection's state change
	// (StateNew, StateActive, StateIdle, StateClosed), as
	// http.Server.ConnState is. Set before serve.
	connState func(net.Conn, http.ConnState)
	// watches counts the watches started (tests).
	watches atomic.Uint64

	mu       sync.Mutex
	ln       net.Listener
	conns    map[*hconn]http.ConnState
	shutting bool
	idleCh   chan struct{} // closed when conns is empty while shutting
}

func (hs *httpServer) serve(ln net.Listener) error {
	hs.mu.Lock()
	if hs.shutting {
		hs.mu.Unlock()
		return errServerClosed
	}
	hs.ln = ln
	if hs.conns == nil {
		hs.conns = map[*hconn]http.ConnState{}
	}
	hs.mu.Unlock()
	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if hs.closed() {
				return errServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				// EMFILE and the like: wait, as net/http does.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				hs.log.Warn("control socket: accept", zap.Error(err), zap.Duration("retry in", backoff))
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		hc := &hconn{srv: hs, c: c}
		if !hs.setState(hc, http.StateNew) {
			c.Close()
			return errServerClosed
		}
		go hc.serve()
	}
}

func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

func (hs *httpServer) closed() bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	return hs.shutting
}

// setState records hc's state; false if hc must close at once (the
// server shuts down and hc is new or idle). StateClosed removes hc.
func (hs *httpServer) setState(hc *hconn, st http.ConnState) bool {
	hs.mu.Lock()
	ok := true
	if st == http.StateClosed {
		delete(hs.conns, hc)
		if hs.shutting && len(hs.conns) == 0 && hs.idleCh != nil {
			close(hs.idleCh)
			hs.idleCh = nil
		}
	} else if hs.shutting && st != http.StateActive {
		ok = false
	} else {
		hs.conns[hc] = st
	}
	hs.mu.Unlock()
	if ok && hs.connState != nil {
		hs.connState(hc.c, st)
	}
	return ok
}

// shutdown stops accepting, closes idle connections, and waits until
// every active one has answered its request and closed, or ctx ends
// (its error is returned then; close ends the rest).
func (hs *httpServer) shutdown(ctx context.Context) error {
	hs.mu.Lock()
	hs.shutting = true
	if hs.ln != nil {
		hs.ln.Close()
	}
	if hs.conns == nil || len(hs.conns) == 0 {
		hs.mu.Unlock()
		return nil
	}
	if hs.idleCh == nil {
		hs.idleCh = make(chan struct{})
	}
	ch := hs.idleCh
	for hc, st := range hs.conns {
		if st == http.StateIdle || st == http.StateNew {
			hc.c.Close()
		}
	}
	hs.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// closeIdle closes the connections that wait for a request.
func (hs *httpServer) closeIdle() {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	for hc, st := range hs.conns {
		if st == http.StateIdle {
			hc.c.Close()
		}
	}
}

// close closes the listener and every connection.
func (hs *httpServer) close() {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.shutting = true
	if hs.ln != nil {
		hs.ln.Close()
	}
	for hc := range hs.conns {
		hc.c.Close()
	}
}

// hconn is one connection.
type hconn struct {
	srv *httpServer
	c   net.Conn
	r   connReader
	br  *bufio.Reader
	bw  *bufio.Writer
}

// connReader is what the request parser reads from: the connection,
// bounded while a header is read, and the byte a watch read, if any.
// The watch (a goroutine reading one byte to see the client close)
// runs only while the handler no longer reads the request.
type connReader struct {
	c      net.Conn
	remain int64 // bytes the header may still take; <0: no bound

	mu       sync.Mutex
	cond     *sync.Cond
	watching bool // a watch read is under way
	aborted  bool // end the watch read (abort) set its deadline
	hasByte  bool // the watch read a byte: the next request's first
	byteBuf  [1]byte
	gone     bool // the watch saw the connection end
	onGone   func()
	headerHi bool // remain ran out while a header was read
}

func (cr *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	cr.mu.Lock()
	if cr.watching {
		cr.mu.Unlock()
		return 0, errors.New("control: read during a watch")
	}
	if cr.hasByte {
		p[0] = cr.byteBuf[0]
		cr.hasByte = false
		cr.mu.Unlock()
		return 1, nil
	}
	cr.mu.Unlock()
	if cr.remain == 0 {
		cr.headerHi = true
		return 0, io.EOF
	}
	if cr.remain > 0 && int64(len(p)) > cr.remain {
		p = p[:cr.remain]
	}
	n, err := cr.c.Read(p)
	if cr.remain > 0 {
		cr.remain -= int64(n)
	}
	return n, err
}

// watch starts the watch read, if none is under way and no byte of the
// next request was read yet; onGone runs if the connection ends.
func (cr *connReader) watch(onGone func()) bool {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if cr.watching || cr.hasByte || cr.gone {
		return false
	}
	if cr.cond == nil {
		cr.cond = sync.NewCond(&cr.mu)
	}
	cr.watching, cr.onGone = true, onGone
	go cr.watchRead()
	return true
}

func (cr *connReader) watchRead() {
	n, err := cr.c.Read(cr.byteBuf[:])
	cr.mu.Lock()
	if n == 1 {
		cr.hasByte = true // a pipelined request's first byte
	}
	var ne net.Error
	if err != nil && !(cr.aborted && errors.As(err, &ne) && ne.Timeout()) {
		cr.gone = true
		if cr.onGone != nil {
			cr.onGone()
		}
	}
	cr.watching, cr.aborted, cr.onGone = false, false, nil
	cr.mu.Unlock()
	cr.cond.Broadcast()
}

// endWatch stops a watch read under way and waits for it.
func (cr *connReader) endWatch() {
	cr.mu.Lock()
	defer cr.mu.Unlock()
	if !cr.watching {
		return
	}
	cr.aborted = true
	cr.c.SetReadDeadline(time.Unix(1, 0))
	for cr.watching {
		cr.cond.Wait()
	}
	cr.c.SetReadDeadline(time.Time{})
}

func (hc *hconn) serve() {
	hs := hc.srv
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			hs.log.Error("control socket: a handler panicked", zap.Any("panic", v), zap.ByteString("stack", buf))
		}
		hc.c.Close()
		hs.setState(hc, http.StateClosed)
	}()
	ctx := hs.base
	if hs.connContext != nil {
		ctx = hs.connContext(ctx, hc.c)
	}
	hc.r = connReader{c: hc.c, remain: -1}
	hc.br = bufio.NewReaderSize(&hc.r, 4<<10)
	hc.bw = bufio.NewWriterSize(hc.c, 4<<10)
	for first := true; ; first = false {
		// Until a request's first byte comes, the connection is new or
		// idle (Shutdown closes it then); the first request's header
		// must come within readHeaderTimeout of the accept, a later one
		// within idleTimeout of the last answer, and then each whole
		// header within readHeaderTimeout of its first byte.
		d := hs.idleTimeout
		if first {
			d = hs.readHeaderTimeout
		} else if !hs.setState(hc, http.StateIdle) {
			return
		}
		if d > 0 {
			hc.c.SetReadDeadline(time.Now().Add(d))
		}
		if _, err := hc.br.Peek(1); err != nil {
			return
		}
		if !hs.setState(hc, http.StateActive) {
			return
		}
		if !hc.serveOne(ctx) {
			return
		}
	}
}

// serveOne reads one request and answers it; false: close the
// connection.
func (hc *hconn) serveOne(cctx context.Context) bool {
	hs := hc.srv
	if hs.readHeaderTimeout > 0 {
		hc.c.SetReadDeadline(time.Now().Add(hs.readHeaderTimeout))
	}
	hc.r.remain = int64(hs.maxHeaderBytes) + 4096 // net/http's slack for the request line
	hc.r.headerHi = false
	req, err := http.ReadRequest(hc.br)
	hc.r.remain = -1
	if err != nil {
		switch {
		case hc.r.headerHi:
			hc.badRequest(http.StatusRequestHeaderFieldsTooLarge, "request header too large")
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		default:
			var ne net.Error
			if !errors.As(err, &ne) {
				hc.badRequest(http.StatusBadRequest, err.Error())
			}
		}
		return false
	}
	hc.c.SetReadDeadline(time.Time{})
	if req.ProtoMajor != 1 {
		hc.badRequest(http.StatusHTTPVersionNotSupported, "HTTP/1.x only")
		return false
	}
	if req.ProtoAtLeast(1, 1) && req.Host == "" {
		hc.badRequest(http.StatusBadRequest, "missing required Host header")
		return false
	}
	ctx, cancel := context.WithCancel(cctx)
	defer cancel()
	req = req.WithContext(ctx)
	req.RemoteAddr = hc.c.RemoteAddr().String()
	w := &response{hc: hc, req: req, hdr: make(http.Header, 2), contentLength: -1,
		close: req.Close} // Connection: close, or HTTP/1.0 without keep-alive
	body := &reqBody{rc: req.Body, w: w, cont: req.ProtoAtLeast(1, 1) && hasToken(req.Header.Get("Expect"), "100-continue")}
	if req.ContentLength == 0 && len(req.TransferEncoding) == 0 {
		body.eof = true
	}
	req.Body = body
	w.body = body
	timer := time.AfterFunc(watchAfter, func() {
		body.mu.Lock()
		defer body.mu.Unlock()
		if body.eof && !body.done && hc.r.watch(cancel) {
			hs.watches.Add(1)
		}
	})
	hs.handler.ServeHTTP(w, req)
	timer.Stop()
	body.mu.Lock()
	body.done = true
	body.mu.Unlock()
	hc.r.endWatch()
	if hc.r.gone {
		return false
	}
	// What the handler left of the body is read (a little) or the
	// connection is closed after the answer.
	if !body.eof {
		if body.sentContinue || !body.cont {
			n, err := io.CopyN(io.Discard, body.rc, maxDrain+1)
			if n > maxDrain || err != io.EOF {
				w.close = true
			}
		} else {
			w.close = true // the client waits for 100 Continue: it sends nothing
		}
	}
	if hs.closed() {
		w.close = true // tell the client not to send another
	}
	if err := w.finish(); err != nil {
		return false
	}
	return !w.close
}

// badRequest answers a request that could not be read, and the
// connection then closes.
func (hc *hconn) badRequest(code int, msg string) {
	hc.c.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(hc.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s",
		code, http.StatusText(code), len(msg)+1, msg+"\n")
	hc.bw.Flush()
}

// hasToken reports whether the comma-separated list v holds token (case
// folded).
func hasToken(v, token string) bool {
	for _, t := range strings.Split(v, ",") {
		if strings.EqualFold(strings.TrimSpace(t), token) {
			return true
		}
	}
	return false
}

// reqBody is a request's body as the handler reads it: 100 Continue is
// sent on its first read if the client asked for it, and its end is
// noted (the watch may start only then).
type reqBody struct {
	rc   io.ReadCloser
	w    *response
	cont bool // the client waits for 100 Continue before the body

	mu           sync.Mutex
	eof          bool // read to its end (or empty)
	done         bool // the handler returned
	sentContinue bool
}

func (b *reqBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.eof {
		b.mu.Unlock()
		return 0, io.EOF
	}
	if b.cont && !b.sentContinue {
		b.sentContinue = true
		if !b.w.sentHeader {
			b.w.hc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			b.w.hc.bw.Flush()
		}
	}
	b.mu.Unlock()
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.mu.Lock()
		b.eof = true
		b.mu.Unlock()
	}
	return n, err
}

func (b *reqBody) Close() error { return nil }

// response is the http.ResponseWriter of one request.
type response struct {
	hc   *hconn
	req  *http.Request
	body *reqBody
	hdr  http.Header

	status        int
	wroteHeader   bool // WriteHeader ran (or the first Write)
	sentHeader    bool // the header is on its way to the client
	chunked       bool
	contentLength int64 // the handler's Content-Length; -1: none
	written       int64 // body bytes the handler wrote
	buf           []byte
	close         bool // Connection: close
	err           error
}

func (w *response) Header() http.Header { return w.hdr }

func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("control: invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		return // informational answers are not sent
	}
	w.wroteHeader, w.status = true, code
	if cl := w.hdr.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.contentLength = v
		} else {
			w.hdr.Del("Content-Length")
		}
	}
}

// bodyAllowed reports whether the status may carry a body.
func (w *response) bodyAllowed() bool {
	return !(w.status >= 100 && w.status <= 199 || w.status == http.StatusNoContent || w.status == http.StatusNotModified)
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if !w.bodyAllowed() {
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if w.req.Method == http.MethodHead {
		return len(p), nil
	}
	if !w.sentHeader {
		if len(w.buf)+len(p) <= respBuf {
			if w.buf == nil {
				w.buf = make([]byte, 0, min(respBuf, max(len(p), 512)))
			}
			w.buf = append(w.buf, p...)
			return len(p), nil
		}
		if err := w.sendHeader(false); err != nil {
			return 0, err
		}
	}
	return len(p), w.writeBody(p)
}

// sendHeader puts the status line and the header in the connection's
// buffer, then what the body held so far. final: the handler has
// returned, so the body's length is known.
func (w *response) sendHeader(final bool) error {
	w.sentHeader = true
	h := w.hdr
	if w.bodyAllowed() {
		if final && w.contentLength < 0 {
			w.contentLength = w.written
			h.Set("Content-Length", strconv.FormatInt(w.written, 10))
		}
		if w.contentLength < 0 {
			if w.req.ProtoAtLeast(1, 1) {
				w.chunked = true
				h.Set("Transfer-Encoding", "chunked")
			} else {
				w.close = true // the body ends with the connection
			}
		}
		if _, ok := h["Content-Type"]; !ok && w.written > 0 && len(w.buf) > 0 {
			h.Set("Content-Type", http.DetectContentType(w.buf))
		}
	} else {
		h.Del("Content-Length")
		h.Del("Transfer-Encoding")
	}
	if !w.close && hasToken(h.Get("Connection"), "close") {
		w.close = true
	}
	if w.close {
		h.Set("Connection", "close")
	} else if !w.req.ProtoAtLeast(1, 1) {
		h.Set("Connection", "keep-alive") // an HTTP/1.0 client that asked for it
	}
	if _, ok := h["Date"]; !ok {
		h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	}
	bw := w.hc.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(strconv.Itoa(w.status))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(w.status))
	bw.WriteString("\r\n")
	if err := h.Write(bw); err != nil {
		return w.fail(err)
	}
	bw.WriteString("\r\n")
	b := w.buf
	w.buf = nil
	return w.writeBody(b)
}

func (w *response) writeBody(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	bw := w.hc.bw
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
	}
	bw.Write(p)
	if w.chunked {
		bw.WriteString("\r\n")
	}
	// bufio.Writer keeps its first error and answers every later write
	// with it.
	if _, err := bw.Write(nil); err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *response) fail(err error) error {
	if w.err == nil {
		w.err = err
		w.close = true
	}
	return w.err
}

// head puts the header in the connection's buffer if it is not there
// yet (200 if the handler wrote none); final as sendHeader's.
func (w *response) head(final bool) error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	if !w.sentHeader {
		return w.sendHeader(final)
	}
	return nil
}

// FlushError sends what the response holds to the client (the header
// first: the body is chunked from then on), for http.ResponseController.
func (w *response) FlushError() error {
	if err := w.head(false); err != nil {
		return err
	}
	if err := w.hc.bw.Flush(); err != nil {
		return w.fail(err)
	}
	return nil
}

// Flush is http.Flusher's.
func (w *response) Flush() { w.FlushError() }

// finish ends the response once the handler has returned.
func (w *response) finish() error {
	if err := w.head(true); err != nil {
		return err
	}
	if w.contentLength >= 0 && w.written < w.contentLength && w.req.Method != http.MethodHead {
		w.close = true // the client waits for bytes that will not come
	}
	if w.chunked {
		w.hc.bw.WriteString("0\r\n\r\n")
	}
	if err := w.hc.bw.Flush(); err != nil {
		return w.fail(err)
	}
	return nil
}
