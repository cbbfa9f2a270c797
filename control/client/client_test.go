package client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/harness"
)

// fakeDaemon is a net/http server on a Unix socket that counts the
// connections it accepted and the requests each endpoint received.
type fakeDaemon struct {
	path  string
	srv   *http.Server
	conns atomic.Int64
	mu    sync.Mutex
	hits  map[string]int
	live  map[net.Conn]http.ConnState
}

func newFake(t *testing.T, h func(w http.ResponseWriter, r *http.Request)) *fakeDaemon {
	t.Helper()
	f := &fakeDaemon{path: filepath.Join(t.TempDir(), "s.sock"), hits: map[string]int{}, live: map[net.Conn]http.ConnState{}}
	ln, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.mu.Lock()
			f.hits[r.Method+" "+r.URL.Path]++
			f.mu.Unlock()
			h(w, r)
		}),
		ConnState: func(c net.Conn, st http.ConnState) {
			f.mu.Lock()
			defer f.mu.Unlock()
			if st == http.StateNew {
				f.conns.Add(1)
			}
			if st == http.StateClosed || st == http.StateHijacked {
				delete(f.live, c)
			} else {
				f.live[c] = st
			}
		},
	}
	go f.srv.Serve(ln)
	t.Cleanup(func() { f.srv.Close() })
	return f
}

func (f *fakeDaemon) hit(k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[k]
}

// closeIdle closes the server's idle connections, as a daemon does at its
// idle timeout or when it stops. The server marks a connection idle after
// it has written an answer, so the client may have read that answer
// first: it waits (bounded) for one to be idle.
func (f *fakeDaemon) closeIdle(t *testing.T) {
	t.Helper()
	closed := harness.Poll(10*time.Second, time.Millisecond, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		n := 0
		for c, st := range f.live {
			if st == http.StateIdle {
				c.Close()
				n++
			}
		}
		return n > 0
	})
	if !closed {
		t.Fatal("no idle connection to close")
	}
}

func node(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"path":"null","type":"char"}` + "\n"))
}

func TestKeepAliveReusesOneConnection(t *testing.T) {
	f := newFake(t, node)
	c := New(f.path)
	defer c.Close()
	for i := 0; i < 20; i++ {
		n, err := c.Stat(context.Background(), "null")
		if err != nil || n.Path != "null" {
			t.Fatalf("stat %d: %+v, %v", i, n, err)
		}
	}
	if got := f.conns.Load(); got != 1 {
		t.Fatalf("20 sequential requests used %d connections, want 1", got)
	}
}

func TestStaleConnectionIsReplacedAndPostSentOnce(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
		node(w, r)
	})
	c := New(f.path)
	defer c.Close()
	if _, err := c.Stat(context.Background(), "null"); err != nil {
		t.Fatal(err)
	}
	f.closeIdle(t)
	// The closed connection must be noticed before the request is
	// written: the registration reaches the daemon once, on a new one.
	major, minor := int64(1), int64(3)
	if _, err := c.Register(context.Background(), wire.RegisterRequest{Path: "x", Type: "char", Major: &major, Minor: &minor}); err != nil {
		t.Fatalf("register after the daemon closed the idle connection: %v", err)
	}
	if got := f.hit("POST /v1/register"); got != 1 {
		t.Fatalf("the daemon received the registration %d times, want 1", got)
	}
	if got := f.conns.Load(); got != 2 {
		t.Fatalf("%d connections, want 2", got)
	}
}

// A POST whose connection ends after it was written, with no answer, may
// have been acted on: it is not sent again. A GET is, once, on a fresh
// connection.
func TestNoAnswerRepeatsOnlyWhatMayBeRepeated(t *testing.T) {
	var drop atomic.Int32 // requests to answer by closing the connection
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if drop.Add(-1) >= 0 {
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				c.Close()
			}
			return
		}
		node(w, r)
	})
	c := New(f.path)
	defer c.Close()
	if _, err := c.Stat(context.Background(), "null"); err != nil {
		t.Fatal(err)
	}
	drop.Store(1)
	err := c.Unregister(context.Background(), "x")
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("unanswered POST: %v, want ErrUnreachable", err)
	}
	if got := f.hit("POST /v1/unregister"); got != 1 {
		t.Fatalf("the POST reached the daemon %d times, want 1", got)
	}
	if _, err := c.Stat(context.Background(), "null"); err != nil { // a new kept connection
		t.Fatal(err)
	}
	drop.Store(1)
	if _, err := c.Stat(context.Background(), "null"); err != nil {
		t.Fatalf("a GET whose kept connection ended unanswered: %v, want it answered on a fresh one", err)
	}
	if got := f.hit("GET /v1/stat"); got != 4 {
		t.Fatalf("the daemon received %d stats, want 4 (the last one twice)", got)
	}
	// A fresh connection that ends unanswered is not tried again.
	drop.Store(2)
	c.Close()
	if _, err := c.Stat(context.Background(), "null"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("unanswered GET on a fresh connection: %v, want ErrUnreachable", err)
	}
	if got := f.hit("GET /v1/stat"); got != 5 {
		t.Fatalf("the daemon received %d stats, want 5", got)
	}
}

func TestErrorAnswer(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":{"code":"not_found","field":"path","message":"no such node"}}` + "\n"))
	})
	c := New(f.path)
	defer c.Close()
	_, err := c.Stat(context.Background(), "nope")
	var e *Error
	if !errors.As(err, &e) || e.Status != 404 || e.Code != "not_found" || e.Field != "path" || e.Message != "no such node" {
		t.Fatalf("got %#v", err)
	}
	// The connection carried the error answer whole and is kept.
	if _, err := c.Stat(context.Background(), "nope"); Code(err) != "not_found" {
		t.Fatal(err)
	}
	if got := f.conns.Load(); got != 1 {
		t.Fatalf("%d connections, want 1", got)
	}
}

func TestUnreachable(t *testing.T) {
	c := New(filepath.Join(t.TempDir(), "none.sock"))
	if _, err := c.Stat(context.Background(), "null"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("got %v", err)
	}
	if _, err := c.Events(context.Background(), 0); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("events: got %v", err)
	}
}

func TestCancelEndsARequestAndDropsItsConnection(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	var hang atomic.Bool
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() {
			entered <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		node(w, r)
	})
	defer close(release)
	c := New(f.path)
	defer c.Close()
	if _, err := c.Stat(context.Background(), "null"); err != nil {
		t.Fatal(err)
	}
	hang.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := c.Stat(ctx, "null")
		errc <- err
	}()
	select { // cancel once the request is in the handler
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the daemon")
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not end the request")
	}
	hang.Store(false)
	if _, err := c.Stat(context.Background(), "null"); err != nil {
		t.Fatal(err)
	}
	if got := f.conns.Load(); got != 2 {
		t.Fatalf("%d connections, want 2 (the cancelled one is not reused)", got)
	}
}

func TestStreamEndsOnClose(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Write([]byte(`{"type":"event","seq":1,"kind":"register","path":"a"}` + "\n"))
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	c := New(f.path)
	st, err := c.Events(context.Background(), 8)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := st.Next()
	if err != nil || rec.Seq != 1 || rec.Path != "a" {
		t.Fatalf("first record: %+v, %v", rec, err)
	}
	if got := f.hit("GET /v1/events"); got != 1 {
		t.Fatalf("%d", got)
	}
	done := make(chan error, 1)
	go func() {
		_, err := st.Next()
		done <- err
	}()
	st.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatalf("Next after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end a Next in progress")
	}
}

// A stream opened with a context ends when the context does, as a
// net/http response body did.
func TestStreamEndsWithItsContext(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Write([]byte(`{"type":"hello","pid":1}` + "\n"))
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	ctx, cancel := context.WithCancel(context.Background())
	st, err := New(f.path).Events(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if rec, err := st.Next(); err != nil || rec.Type != "hello" {
		t.Fatalf("%+v %v", rec, err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := st.Next()
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Next after the context ended: no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the context's end did not end a Next in progress")
	}
}

// A stream's error answer is an *Error, and its connection is closed.
func TestStreamErrorAnswer(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"error":{"code":"too_many_consumers","message":"64 event streams and waits are open already"}}` + "\n"))
	})
	c := New(f.path)
	if _, err := c.Events(context.Background(), 0); Code(err) != "too_many_consumers" {
		t.Fatalf("got %v", err)
	}
	if _, err := c.AttachHelper(context.Background()); Code(err) != "too_many_consumers" {
		t.Fatalf("attach: got %v", err)
	}
}
