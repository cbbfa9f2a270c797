package control

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/test/harness"
)

// The control socket's HTTP/1.1 server, checked with net/http's own
// client and with raw bytes.

type httpRig struct {
	hs    *httpServer
	path  string
	conns atomic.Int64 // accepted
	done  chan error
}

func newHTTPRig(t *testing.T, h http.HandlerFunc) *httpRig {
	t.Helper()
	r := &httpRig{path: filepath.Join(t.TempDir(), "h.sock"), done: make(chan error, 1)}
	ln, err := net.Listen("unix", r.path)
	if err != nil {
		t.Fatal(err)
	}
	r.hs = &httpServer{handler: h, base: context.Background(), readHeaderTimeout: 10 * time.Second,
		idleTimeout: time.Minute, maxHeaderBytes: 16 << 10, log: zap.NewNop(),
		connState: func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				r.conns.Add(1)
			}
		}}
	go func() { r.done <- r.hs.serve(ln) }()
	t.Cleanup(func() {
		r.hs.close()
		select {
		case err := <-r.done:
			if err != errServerClosed {
				t.Errorf("serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("serve did not return after close")
		}
	})
	return r
}

// client is net/http's, over the rig's socket.
func (r *httpRig) client() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", r.path)
		},
		ExpectContinueTimeout: 5 * time.Second,
	}}
}

func (r *httpRig) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", r.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c
}

func get(t *testing.T, c *http.Client, method, url string, body io.Reader) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, string(b)
}

func TestHTTPAnswersOnOneKeptConnectionWithContentLength(t *testing.T) {
	r := newHTTPRig(t, func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"method":%q,"path":%q,"query":%q,"body":%q}`, req.Method, req.URL.Path, req.URL.RawQuery, b)
	})
	c := r.client()
	for i := 0; i < 5; i++ {
		resp, body := get(t, c, http.MethodPost, fmt.Sprintf("http://devfsd/v1/x?i=%d", i), strings.NewReader("hello"))
		want := fmt.Sprintf(`{"method":"POST","path":"/v1/x","query":"i=%d","body":"hello"}`, i)
		if resp.StatusCode != 200 || body != want || resp.ContentLength != int64(len(want)) || resp.TransferEncoding != nil {
			t.Fatalf("answer %d: %d %q (length %d, %v), want 200 %q with its Content-Length", i, resp.StatusCode, body, resp.ContentLength, resp.TransferEncoding, want)
		}
	}
	resp, body := get(t, c, http.MethodHead, "http://devfsd/v1/x", nil)
	if resp.StatusCode != 200 || body != "" || resp.ContentLength <= 0 {
		t.Fatalf("HEAD: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
	}
	if n := r.conns.Load(); n != 1 {
		t.Fatalf("%d connections for 6 requests, want 1", n)
	}
}

func TestHTTPStatusHeadersAndEmptyBodies(t *testing.T) {
	r := newHTTPRig(t, func(w http.ResponseWriter, req *http.Request) {
		switch req.URL.Path {
		case "/created":
			w.Header().Set("X-Thing", "a")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, "made")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
			if _, err := io.WriteString(w, "x"); err != http.ErrBodyNotAllowed {
				panic("a body was allowed in a 204")
			}
		case "/empty":
		}
	})
	c := r.client()
	resp, body := get(t, c, http.MethodGet, "http://devfsd/created", nil)
	if resp.StatusCode != 201 || body != "made" || resp.Header.Get("X-Thing") != "a" || resp.Header.Get("Date") == "" {
		t.Fatalf("/created: %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = get(t, c, http.MethodGet, "http://devfsd/nocontent", nil)
	if resp.StatusCode != 204 || body != "" {
		t.Fatalf("/nocontent: %d %q", resp.StatusCode, body)
	}
	resp, body = get(t, c, http.MethodGet, "http://devfsd/empty", nil)
	if resp.StatusCode != 200 || body != "" || resp.ContentLength != 0 {
		t.Fatalf("/empty: %d %q length %d", resp.StatusCode, body, resp.ContentLength)
	}
	if n := r.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

func TestHTTPFlushedAndLargeAnswersAreChunked(t *testing.T) {
	release := make(chan struct{})
	big := strings.Repeat("0123456789abcdef", 1<<10) // 16 KiB, more than respBuf
	r := newHTTPRig(t, func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/big" {
			io.WriteString(w, big)
			return
		}
		io.WriteString(w, "first\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			panic(err)
		}
		<-release
		io.WriteString(w, "second\n")
	})
	c := r.client()
	resp, err := c.Get("http://devfsd/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("a flushed answer's transfer encoding %v, want chunked", resp.TransferEncoding)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("the flushed line before the handler went on: %q %v", line, err)
	}
	close(release)
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second\n" {
		t.Fatalf("the rest: %q %v", rest, err)
	}
	resp2, body := get(t, c, http.MethodGet, "http://devfsd/big", nil)
	if body != big || len(resp2.TransferEncoding) != 1 {
		t.Fatalf("16 KiB answer: %d bytes, transfer encoding %v", len(body), resp2.TransferEncoding)
	}
	if n := r.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1: a chunked answer keeps the connection", n)
	}
}

func TestHTTPExpectContinue(t *testing.T) {
	r := newHTTPRig(t, func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/ignore" {
			io.WriteString(w, "not read")
			return
		}
		b, _ := io.ReadAll(req.Body)
		fmt.Fprintf(w, "%d", len(b))
	})
	c := r.dial(t)
	br := bufio.NewReader(c)
	body := strings.Repeat("x", 5000)
	fmt.Fprintf(c, "POST /read HTTP/1.1\r\nHost: devfsd\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(body))
	st, err := br.ReadString('\n')
	if err != nil || st != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("before the body: %q %v, want 100 Continue", st, err)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("after 100 Continue: %q", l)
	}
	io.WriteString(c, body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "5000" || resp.Close {
		t.Fatalf("answer %d %q close %v", resp.StatusCode, b, resp.Close)
	}
	// A handler that does not read the body: no 100 Continue, the answer,
	// and the connection closed (the client never sends the body).
	fmt.Fprintf(c, "POST /ignore HTTP/1.1\r\nHost: devfsd\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(body))
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "not read" || !resp.Close {
		t.Fatalf("answer to an unread body %d %q close %v, want 200 and Connection: close", resp.StatusCode, b, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the answer: %v, want EOF", err)
	}
}

func TestHTTPPipelinedRequestsAreAnsweredInOrder(t *testing.T) {
	r := newHTTPRig(t, func(w http.ResponseWriter, req *http.Request) {
		io.WriteString(w, req.URL.Path)
	})
	c := r.dial(t)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"/a", "/b", "/c"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != want || resp.Close != (want == "/c") {
			t.Fatalf("answer %q close %v, want %q", b, resp.Close, want)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after Connection: close: %v, want EOF", err)
	}
}

func TestHTTPBadRequestsGetAnErrorAndAClose(t *testing.T) {
	r := newHTTPRig(t, func(w http.ResponseWriter, req *http.Request) { io.WriteString(w, "ok") })
	for _, tc := range []struct {
		name, req string
		code      int
	}{
		{"garbage", "NOT HTTP AT ALL\r\n\r\n", 400},
		{"no host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"huge header", "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 40<<10) + "\r\n\r\n", 431},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
	} {
		c := r.dial(t)
		go io.WriteString(c, tc.req) // the server may answer before reading it all
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		io.ReadAll(resp.Body)
		if resp.StatusCode != tc.code || !resp.Close {
			t.Fatalf("%s: %d close %v, want %d and a close", tc.name, resp.StatusCode, resp.Close, tc.code)
		}
	}
	// The server goes on.
	if _, body := get(t, r.client(), http.MethodGet, "http://devfsd/", nil); body != "ok" {
		t.Fatalf("after the bad requests: %q", body)
	}
}

func TestHTTPHandlerPanicClosesOnlyItsConnection(t *testing.T) {
	r := newHTTPRig(t, func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/panic" {
			panic("handler bug")
		}
		io.WriteString(w, "ok")
	})
	c := r.dial(t)
	io.WriteString(c, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
	if b, err := io.ReadAll(c); err != nil || len(b) != 0 {
		t.Fatalf("after a panic: %q %v, want the connection closed with no answer", b, err)
	}
	if _, body := get(t, r.client(), http.MethodGet, "http://devfsd/", nil); body != "ok" {
		t.Fatalf("after the panic: %q", body)
	}
}

// A request that runs for long gets its connection watched: the client
// going away ends its context. One answered at once starts no watch (no
// goroutine, no wake-ups).
func TestHTTPClientGoneEndsALongRequestsContext(t *testing.T) {
	ended := make(chan error, 1)
	started := make(chan struct{}, 1)
	r := newHTTPRig(t, func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/quick" {
			io.WriteString(w, "ok")
			return
		}
		started <- struct{}{}
		select {
		case <-req.Context().Done():
			ended <- req.Context().Err()
		case <-time.After(60 * time.Second):
			ended <- fmt.Errorf("the context did not end")
		}
	})
	c := r.dial(t)
	io.WriteString(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
	<-started
	harness.Until(t, 30*time.Second, "the watch of the waiting request", func() bool { return r.hs.watches.Load() == 1 })
	c.Close()
	select {
	case err := <-ended:
		if err != context.Canceled {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the handler's context did not end after the client closed")
	}
	cl := r.client()
	for i := 0; i < 50; i++ {
		get(t, cl, http.MethodGet, "http://devfsd/quick", nil)
	}
	// A quick request that the machine's load holds past watchAfter is
	// watched too; most are not. Watching every request (net/http's way)
	// would make 50.
	if n := r.hs.watches.Load() - 1; n >= 25 {
		t.Fatalf("%d of 50 quick requests were watched, want few", n)
	}
}

func TestHTTPShutdownClosesIdleAndWaitsForActive(t *testing.T) {
	release := make(chan struct{})
	inHandler := make(chan struct{}, 1)
	r := newHTTPRig(t, func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/slow" {
			inHandler <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	})
	idle := r.dial(t)
	ib := bufio.NewReader(idle)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, err := http.ReadResponse(ib, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first answer: %v", err)
	} else {
		io.ReadAll(resp.Body)
	}
	active := r.dial(t)
	io.WriteString(active, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-inHandler
	harness.Until(t, 30*time.Second, "the first connection to go idle", func() bool {
		r.hs.mu.Lock()
		defer r.hs.mu.Unlock()
		n := 0
		for _, st := range r.hs.conns {
			if st == http.StateIdle {
				n++
			}
		}
		return n == 1
	})
	shut := make(chan error, 1)
	go func() { shut <- r.hs.shutdown(context.Background()) }()
	if _, err := ib.ReadByte(); err != io.EOF {
		t.Fatalf("the idle connection after shutdown: %v, want EOF", err)
	}
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned (%v) while a request was answered", err)
	default:
	}
	close(release)
	resp, err := http.ReadResponse(bufio.NewReader(active), nil)
	if err != nil || resp.StatusCode != 200 || !resp.Close {
		t.Fatalf("the active request during shutdown: %v %v", resp, err)
	}
	select {
	case err := <-shut:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("shutdown did not return once the active request was answered")
	}
	if _, err := net.Dial("unix", r.path); err == nil {
		t.Fatal("the listener accepts after shutdown")
	}
}
