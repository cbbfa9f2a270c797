package client

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The transport. Every request is plain HTTP/1.1 on the wire (what curl
// sends), written and its answer read on the caller's goroutine, over a
// connection kept alive for the next request. net/http's client would
// hand each request to its connection's writer goroutine and the answer
// back from its reader goroutine: two wake-ups more on the path of every
// request, which on a Unix socket cost more than the request itself.

// Pool bounds: how many idle connections a pool keeps, and how long one
// idle is trusted (the daemon closes idle connections after 2 minutes).
const (
	maxIdleConns = 16
	connIdle     = 60 * time.Second
)

// conn is one connection to the socket. A conn is used by one request
// at a time: it is either in a pool's idle list or held by one caller.
type conn struct {
	c     net.Conn
	raw   syscall.RawConn // c's, for the liveness check
	br    *bufio.Reader
	buf   []byte // the request being written, reused
	used  time.Time
	dl    time.Time // the deadline set on c
	fresh bool      // dialled for this request, not kept from an earlier one
}

// pool is a set of idle kept-alive connections, most recently used last.
type pool struct {
	mu     sync.Mutex
	idle   []*conn // guarded by mu
	closed bool    // guarded by mu: put closes what it is given
}

// get returns an idle connection that is still open, or dials one (always
// if fresh).
func (p *pool) get(ctx context.Context, path string, fresh bool) (*conn, error) {
	for !fresh {
		p.mu.Lock()
		if len(p.idle) == 0 {
			p.mu.Unlock()
			break
		}
		cn := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		p.mu.Unlock()
		if time.Since(cn.used) < connIdle && cn.open() {
			cn.fresh = false
			return cn, nil
		}
		cn.c.Close()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, err
	}
	cn := &conn{c: c, br: bufio.NewReaderSize(c, 4096), fresh: true}
	if sc, ok := c.(syscall.Conn); ok {
		cn.raw, _ = sc.SyscallConn()
	}
	return cn, nil
}

// put keeps cn for the next request, or closes it if the pool is full or
// closed.
func (p *pool) put(cn *conn) {
	cn.used = time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.idle) >= maxIdleConns {
		cn.c.Close()
		return
	}
	p.idle = append(p.idle, cn)
}

// closeIdle closes the idle connections; if final, put closes every
// connection given back from now on.
func (p *pool) closeIdle(final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = p.closed || final
	for _, cn := range p.idle {
		cn.c.Close()
	}
	p.idle = nil
}

// open reports whether an idle connection may carry a request: the daemon
// has not closed it (a restart, a shutdown, its idle timeout) and sent
// nothing unasked. One non-blocking peek, so that a request is not
// written to a connection known to be dead.
func (cn *conn) open() bool {
	if cn.br.Buffered() > 0 {
		return false
	}
	if cn.raw == nil {
		return true
	}
	ok := true
	err := cn.raw.Read(func(fd uintptr) bool {
		var b [1]byte
		// EAGAIN: open and quiet; 0 bytes: closed; bytes: unasked.
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		ok = errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)
		return true // never wait
	})
	return ok && err == nil
}

// answer is a read answer: its status, its body, and whether the
// connection may carry the next request.
type answer struct {
	status int
	body   []byte
	keep   bool
}

// request writes one request: method, target (path and query), and a
// JSON body if hasBody.
func (cn *conn) request(method, target string, body []byte, hasBody bool) error {
	b := cn.buf[:0]
	b = append(b, method...)
	b = append(b, ' ')
	b = append(b, target...)
	b = append(b, " HTTP/1.1\r\nHost: devfsd\r\n"...)
	if hasBody {
		b = append(b, "Content-Type: application/json\r\nContent-Length: "...)
		b = strconv.AppendInt(b, int64(len(body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	b = append(b, body...)
	if cap(b) <= 64<<10 {
		cn.buf = b
	}
	_, err := cn.c.Write(b)
	return err
}

// bound makes cn's I/O end when ctx does: at its deadline, or when it is
// cancelled. The returned stop reports false if the cancellation fired
// (cn is then unusable).
func (cn *conn) bound(ctx context.Context) (stop func() bool) {
	dl, _ := ctx.Deadline()
	if !dl.Equal(cn.dl) {
		cn.c.SetDeadline(dl)
		cn.dl = dl
	}
	if ctx.Done() == nil {
		return func() bool { return true }
	}
	return context.AfterFunc(ctx, func() { cn.c.SetDeadline(time.Unix(1, 0)) })
}

// exchange sends one request and reads its whole answer. On an error,
// written says whether the request was written whole, and unread that no
// byte of an answer came (the connection ended first).
func (cn *conn) exchange(ctx context.Context, method, target string, body []byte, hasBody bool) (a answer, written, unread bool, err error) {
	stop := cn.bound(ctx)
	defer func() {
		if !stop() && err == nil {
			err = ctx.Err() // cancelled at the last moment: cn is unusable
			a = answer{}
		}
	}()
	if err := cn.request(method, target, body, hasBody); err != nil {
		return a, false, true, err
	}
	if _, err := cn.br.Peek(1); err != nil {
		return a, true, err == io.EOF, err
	}
	if h, ok := plainHead(cn.br); ok {
		cn.br.Discard(h.n)
		b := make([]byte, h.length)
		if _, err := io.ReadFull(cn.br, b); err != nil {
			return a, true, false, err
		}
		return answer{status: h.status, body: b, keep: !h.close}, true, false, nil
	}
	resp, err := http.ReadResponse(cn.br, nil)
	if err != nil {
		return a, true, false, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return a, true, false, err
	}
	return answer{status: resp.StatusCode, body: b, keep: !resp.Close}, true, false, nil
}

// plainHeader reports whether a header line is of the plain kind: a
// name of letters, digits and dashes, a value of printable ASCII.
func plainHeader(key, val []byte) bool {
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	for _, c := range val {
		if c < 0x20 && c != '\t' || c > 0x7e {
			return false
		}
	}
	return true
}

// head is an answer's head as plainHead reads it.
type head struct {
	n      int // its length, the blank line included
	status int
	length int  // Content-Length
	close  bool // Connection: close
}

// plainHead reads, without consuming it, the head of an answer that is
// already whole in br's buffer, if it is the plain kind the daemon writes:
// HTTP/1.1, a status of 200 to 599, one Content-Length, no
// Transfer-Encoding, no header folded over lines. Anything else it
// leaves to http.ReadResponse (ok false), which then reads it from the
// start.
func plainHead(br *bufio.Reader) (h head, ok bool) {
	buf, _ := br.Peek(br.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return h, false
	}
	h.n = end + 4
	lines := buf[:end+2]
	nl := bytes.Index(lines, []byte("\r\n"))
	st := lines[:nl]
	// "HTTP/1.1 201 Created"
	if len(st) < 12 || string(st[:9]) != "HTTP/1.1 " || len(st) > 12 && st[12] != ' ' || !plainHeader(nil, st) {
		return h, false
	}
	for _, c := range st[9:12] {
		if c < '0' || c > '9' {
			return h, false
		}
		h.status = h.status*10 + int(c-'0')
	}
	if h.status < 200 || h.status > 599 || h.status == 204 || h.status == 304 {
		return h, false // no answer of the daemon's; 204 and 304 have no body
	}
	h.length = -1
	for rest := lines[nl+2:]; len(rest) > 0; {
		nl := bytes.Index(rest, []byte("\r\n"))
		line := rest[:nl]
		rest = rest[nl+2:]
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || line[0] == ' ' || line[0] == '\t' {
			return h, false
		}
		key, val := line[:colon], bytes.Trim(line[colon+1:], " \t")
		if !plainHeader(key, val) {
			return h, false
		}
		switch {
		case bytes.EqualFold(key, []byte("Content-Length")):
			if h.length >= 0 || len(val) == 0 || len(val) > 9 {
				return h, false
			}
			n := 0
			for _, c := range val {
				if c < '0' || c > '9' {
					return h, false
				}
				n = n*10 + int(c-'0')
			}
			h.length = n
		case bytes.EqualFold(key, []byte("Transfer-Encoding")):
			return h, false
		case bytes.EqualFold(key, []byte("Connection")):
			for _, tok := range bytes.Split(val, []byte(",")) {
				if bytes.EqualFold(bytes.Trim(tok, " \t"), []byte("close")) {
					h.close = true
				}
			}
		}
	}
	return h, h.length >= 0
}

// streamBody is an open stream's body: closing it closes its connection
// (and only that: closing an HTTP body would read it to its end), which
// ends a read in progress.
type streamBody struct {
	io.Reader
	c    net.Conn
	stop func() bool
}

func (sb *streamBody) Close() error {
	sb.stop()
	return sb.c.Close()
}
