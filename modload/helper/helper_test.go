package helper

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devfsd/devfsd/dcache"
)

// chanConn records requests.
type chanConn struct{ ch chan Request }

func (c chanConn) Send(r Request) bool {
	select {
	case c.ch <- r:
		return true
	default:
		return false
	}
}

func self() dcache.Caller { return dcache.Caller{Pid: uint32(os.Getpid())} }

func TestLoadWithoutHelperIsNotAttached(t *testing.T) {
	l := New(nil)
	if err := l.Load(context.Background(), "", "x", modloadCaller()); !errors.Is(err, ErrNotAttached) {
		t.Fatalf("Load = %v, want ErrNotAttached", err)
	}
	if l.IsHelper(uint32(os.Getpid())) {
		t.Fatal("IsHelper true with no helper attached")
	}
}

func TestLoadIsAnsweredByDone(t *testing.T) {
	l := New(nil)
	conn := chanConn{make(chan Request, 1)}
	s, err := l.Attach(self(), conn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach("test over")
	if _, err := l.Attach(self(), conn); !errors.Is(err, ErrAttached) {
		t.Fatalf("second Attach = %v, want ErrAttached", err)
	}
	res := make(chan error, 1)
	go func() { res <- l.Load(context.Background(), "net", "tun", modloadCaller()) }()
	req := <-conn.ch
	if req.Dir != "net" || req.Name != "tun" || req.ID == 0 {
		t.Fatalf("request %+v", req)
	}
	if err := s.Done(req.ID+1, nil); !errors.Is(err, ErrUnknownID) {
		t.Fatalf("Done(unknown) = %v", err)
	}
	if err := s.Done(req.ID, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatalf("Load = %v", err)
	}
	if err := s.Done(req.ID, nil); !errors.Is(err, ErrUnknownID) {
		t.Fatalf("second Done = %v, want ErrUnknownID", err)
	}
}

func TestDetachAnswersEveryPendingLoadAtOnce(t *testing.T) {
	l := New(nil)
	conn := chanConn{make(chan Request, 100)}
	s, err := l.Attach(self(), conn)
	if err != nil {
		t.Fatal(err)
	}
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- l.Load(context.Background(), "", "x", modloadCaller())
		}()
	}
	for i := 0; i < n; i++ {
		<-conn.ch // every load is pending at the helper
	}
	s.Detach("test")
	s.Detach("idempotent")
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("pending loads not answered within 1s of Detach")
	}
	close(errs)
	for err := range errs {
		if !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("Load = %v, want ENOENT", err)
		}
	}
	if _, ok := l.Attached(); ok {
		t.Fatal("still attached")
	}
	if st := l.Stats(); st.Aborted != n {
		t.Fatalf("stats %+v, want %d aborted", st, n)
	}
	// A new helper can attach.
	s2, err := l.Attach(self(), conn)
	if err != nil {
		t.Fatal(err)
	}
	s2.Detach("test over")
}

func TestLoadEndsWithItsContext(t *testing.T) {
	l := New(nil)
	conn := chanConn{make(chan Request, 1)}
	s, err := l.Attach(self(), conn)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach("test over")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := l.Load(ctx, "", "x", modloadCaller()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Load = %v", err)
	}
	req := <-conn.ch
	if err := s.Done(req.ID, nil); !errors.Is(err, ErrUnknownID) {
		t.Fatalf("late Done = %v, want ErrUnknownID", err)
	}
}

func TestFullQueueFailsTheLoadAtOnce(t *testing.T) {
	l := New(nil)
	s, err := l.Attach(self(), chanConn{make(chan Request)}) // no room
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach("test over")
	if err := l.Load(context.Background(), "", "x", modloadCaller()); !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("Load = %v, want EAGAIN", err)
	}
}

// The helper's pid, its threads and its descendants are the helper;
// others are not.
func TestIsHelperPidThreadsAndDescendants(t *testing.T) {
	l := New(nil)
	s, err := l.Attach(self(), chanConn{make(chan Request, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach("test over")
	if !l.IsHelper(uint32(os.Getpid())) {
		t.Error("the helper's own pid")
	}
	if !l.IsHelper(uint32(syscall.Gettid())) {
		t.Error("a thread of the helper")
	}
	// A grandchild: sh runs sleep.
	cmd := exec.Command("sh", "-c", "sleep 30 & echo $!; wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Process.Kill(); cmd.Wait() })
	var gpid int
	buf := make([]byte, 32)
	n, _ := out.Read(buf)
	for _, c := range buf[:n] {
		if c >= '0' && c <= '9' {
			gpid = gpid*10 + int(c-'0')
		}
	}
	if !l.IsHelper(uint32(cmd.Process.Pid)) {
		t.Error("a child of the helper")
	}
	if !l.IsHelper(uint32(gpid)) {
		t.Errorf("a grandchild of the helper (pid %d)", gpid)
	}
	if l.IsHelper(1) || l.IsHelper(uint32(os.Getppid())) {
		t.Error("init or the helper's parent taken for the helper")
	}
	if l.IsHelper(0) || l.IsHelper(1<<30) {
		t.Error("pid 0 or a pid that does not exist taken for the helper")
	}
}

// A recorded start time that does not match (the pid was reused) is not
// the helper.
func TestIsHelperChecksStartTime(t *testing.T) {
	pid := uint32(os.Getpid())
	st, err := startTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	if !isDescendant(pid, pid, st, -1) {
		t.Fatal("own start time does not match")
	}
	if isDescendant(pid, pid, st+1, -1) {
		t.Fatal("a different start time matched")
	}
}

// The helper's exit, seen through its pidfd, detaches it even when
// nobody closes its connection.
func TestHelperExitDetaches(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := New(nil)
	conn := chanConn{make(chan Request, 1)}
	s, err := l.Attach(dcache.Caller{Pid: uint32(cmd.Process.Pid)}, conn)
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() { res <- l.Load(context.Background(), "", "x", modloadCaller()) }()
	<-conn.ch
	cmd.Process.Kill()
	cmd.Wait()
	select {
	case err := <-res:
		if !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("Load = %v, want ENOENT", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the helper's death did not answer the pending load")
	}
	select {
	case <-s.Gone():
	case <-time.After(2 * time.Second):
		t.Fatal("session not ended")
	}
}

func modloadCaller() dcache.Caller { return dcache.Caller{Pid: 1} }
