package chain

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/helper"
)

type conn struct{ ch chan helper.Request }

func (c conn) Send(r helper.Request) bool { c.ch <- r; return true }

func TestHelperFirstFallbackWhileNoneAttached(t *testing.T) {
	var fellBack int
	fb := modload.LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		fellBack++
		return nil
	})
	h := helper.New(nil)
	c := Loader{Helper: h, Fallback: fb}
	if err := c.Load(context.Background(), "", "x", dcache.Caller{}); err != nil || fellBack != 1 {
		t.Fatalf("no helper: err %v, fallback calls %d", err, fellBack)
	}
	cn := conn{make(chan helper.Request, 1)}
	s, err := h.Attach(dcache.Caller{Pid: uint32(os.Getpid())}, cn)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { res <- c.Load(context.Background(), "", "y", dcache.Caller{}) }()
	req := <-cn.ch
	s.Done(req.ID, nil)
	if err := <-res; err != nil || fellBack != 1 {
		t.Fatalf("with helper: err %v, fallback calls %d", err, fellBack)
	}
	// A load pending when the helper goes is the fallback's at once.
	go func() { res <- c.Load(context.Background(), "", "z", dcache.Caller{}) }()
	<-cn.ch
	s.Detach("test")
	if err := <-res; err != nil || fellBack != 2 {
		t.Fatalf("helper gone: err %v, fallback calls %d; want the fallback's nil", err, fellBack)
	}
	// Then the fallback again.
	if err := c.Load(context.Background(), "", "w", dcache.Caller{}); err != nil || fellBack != 3 {
		t.Fatalf("after the helper: err %v, fallback calls %d", err, fellBack)
	}
}

// The helper's own answers are final: an error it gave is not retried on
// the fallback, and neither is a load whose context ended.
func TestHelperAnswerIsNotRetried(t *testing.T) {
	var fellBack int
	fb := modload.LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		fellBack++
		return nil
	})
	h := helper.New(nil)
	c := Loader{Helper: h, Fallback: fb}
	cn := conn{make(chan helper.Request, 1)}
	s, err := h.Attach(dcache.Caller{Pid: uint32(os.Getpid())}, cn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach("test")
	res := make(chan error, 1)
	go func() { res <- c.Load(context.Background(), "", "x", dcache.Caller{}) }()
	req := <-cn.ch
	s.Done(req.ID, syscall.ENOENT)
	if err := <-res; !errors.Is(err, syscall.ENOENT) || fellBack != 0 {
		t.Fatalf("helper said ENOENT: err %v, fallback calls %d; want ENOENT and none", err, fellBack)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { res <- c.Load(ctx, "", "y", dcache.Caller{}) }()
	<-cn.ch
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) || fellBack != 0 {
		t.Fatalf("ctx ended: err %v, fallback calls %d; want context.Canceled and none", err, fellBack)
	}
}

// Without a fallback, a load pending when the helper goes is ENOENT.
func TestHelperGoneNoFallbackIsENOENT(t *testing.T) {
	h := helper.New(nil)
	c := Loader{Helper: h}
	cn := conn{make(chan helper.Request, 1)}
	s, err := h.Attach(dcache.Caller{Pid: uint32(os.Getpid())}, cn)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { res <- c.Load(context.Background(), "", "x", dcache.Caller{}) }()
	<-cn.ch
	s.Detach("test")
	if err := <-res; !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("helper gone, no fallback: %v, want ENOENT", err)
	}
}

func TestNoFallbackIsENOENT(t *testing.T) {
	c := Loader{Helper: helper.New(nil)}
	if err := c.Load(context.Background(), "", "x", dcache.Caller{}); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Load = %v", err)
	}
}

func TestWhich(t *testing.T) {
	h := helper.New(nil)
	fb := modload.LoaderFunc(func(context.Context, string, string, dcache.Caller) error { return nil })
	for _, tc := range []struct {
		c    Loader
		want string
	}{
		{Loader{Helper: h}, "none"},
		{Loader{Helper: h, Fallback: fb}, "fallback"},
		{Loader{Helper: h, Fallback: fb, FallbackName: "builtin"}, "builtin"},
	} {
		if got := tc.c.LoaderName(); got != tc.want {
			t.Errorf("LoaderName() = %q, want %q", got, tc.want)
		}
	}
	s, err := h.Attach(dcache.Caller{Pid: uint32(os.Getpid())}, conn{make(chan helper.Request, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach("test")
	if got := (Loader{Helper: h, Fallback: fb, FallbackName: "builtin"}).LoaderName(); got != "helper" {
		t.Errorf("with a helper attached: %q", got)
	}
}

type declining struct{ modload.LoaderFunc }

func (declining) Declines(dir, name string) bool { return name == "no" }

// Declines: the fallback's answer while no helper is attached, never while
// one is; no fallback declines everything; a fallback that cannot tell
// declines nothing.
func TestDeclines(t *testing.T) {
	none := modload.LoaderFunc(func(context.Context, string, string, dcache.Caller) error { return nil })
	h := helper.New(nil)
	c := Loader{Helper: h, Fallback: declining{none}}
	if !c.Declines("", "no") || c.Declines("", "yes") {
		t.Fatalf("no helper: Declines(no)=%v Declines(yes)=%v, want true, false",
			c.Declines("", "no"), c.Declines("", "yes"))
	}
	if !(Loader{Helper: h}).Declines("", "x") {
		t.Error("no helper and no fallback: Declines = false, want true")
	}
	if (Loader{Helper: h, Fallback: none}).Declines("", "no") {
		t.Error("a fallback that is not a Decliner: Declines = true, want false")
	}
	s, err := h.Attach(dcache.Caller{Pid: uint32(os.Getpid())}, conn{make(chan helper.Request, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach("test")
	if c.Declines("", "no") {
		t.Error("helper attached: Declines = true, want false (the helper must be asked)")
	}
}
