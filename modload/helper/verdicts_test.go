package helper

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// openFds counts this process's open descriptors.
func openFds(t testing.TB) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(es) - 1 // the directory's own
}

// TestKeptVerdictsHammer: many goroutines, each on a thread of its own,
// ask at once (GOMAXPROCS 1 and 2) for callers whose verdicts are kept —
// their own thread (the helper's: this process is it), init and this
// process's parent (not) — and for children that are started and killed
// meanwhile (whose verdicts are dropped and walked again), while the
// session detaches under them. Every answer for a caller whose verdict
// cannot change is right while the session lives, every answer is no
// once it has detached, and no pidfd is left open.
func TestKeptVerdictsHammer(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprintf("GOMAXPROCS=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			hammerVerdicts(t)
		})
	}
}

func hammerVerdicts(t *testing.T) {
	base := openFds(t)
	l := New(nil)
	s, err := l.Attach(self(), nopConn{})
	if err != nil {
		t.Fatal(err)
	}
	ppid := uint32(os.Getppid())

	// churn starts and kills children, publishing the latest one's pid.
	var child atomic.Uint32
	stopChurn := make(chan struct{})
	churned := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stopChurn:
				churned <- nil
				return
			default:
			}
			c := exec.Command("sleep", "60")
			if err := c.Start(); err != nil {
				churned <- err
				return
			}
			child.Store(uint32(c.Process.Pid))
			for i := 0; i < 20 && l.IsHelper(uint32(c.Process.Pid)); i++ {
			}
			c.Process.Kill()
			c.Wait()
		}
	}()

	const askers, rounds = 6, 400
	var wg sync.WaitGroup
	var detached atomic.Bool
	errs := make(chan string, askers)
	half := make(chan struct{}, askers)
	for g := 0; g < askers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tid := uint32(unix.Gettid())
			for i := 0; i < rounds; i++ {
				if i == rounds/2 {
					half <- struct{}{}
				}
				gone := detached.Load() // before the answers: a no is then required
				own, init, parent := l.IsHelper(tid), l.IsHelper(1), l.IsHelper(ppid)
				l.IsHelper(child.Load())
				switch {
				case init || parent:
					errs <- fmt.Sprintf("init (%v) or the parent %d (%v) taken for the helper", init, ppid, parent)
					return
				case gone && own:
					errs <- fmt.Sprintf("thread %d the helper's after the session detached", tid)
					return
				case !gone && !own && l.Current() == s:
					errs <- fmt.Sprintf("the helper's own thread %d not the helper's", tid)
					return
				}
			}
		}()
	}
	for g := 0; g < askers; g++ {
		<-half
	}
	s.Detach("hammer: detach under the askers")
	detached.Store(true)
	wg.Wait()
	close(stopChurn)
	if err := <-churned; err != nil {
		t.Fatal(err)
	}
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	for i := range s.kept.slots {
		if v := s.kept.slots[i].Load(); v != nil {
			t.Errorf("slot %d keeps a verdict for %d after Detach", i, v.tid)
		}
	}
	// The exit watcher closes its descriptors as it returns, after Detach.
	harness.Until(t, 30*time.Second, fmt.Sprintf("the open descriptors back to %d", base),
		func() bool { return openFds(t) <= base })
}

// A verdict is kept for a caller that asks again and answers it; when
// the caller's process dies, the next question drops it and closes its
// pidfds, and the dead pid is not the helper's.
func TestKeptVerdictDroppedWhenItsProcessDies(t *testing.T) {
	l := New(nil)
	s, err := l.Attach(self(), nopConn{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach("test over")
	c := exec.Command("sleep", "60")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Process.Kill(); c.Wait() })
	pid := uint32(c.Process.Pid)
	if !l.IsHelper(pid) {
		t.Fatalf("the helper's child %d is not the helper's", pid)
	}
	v := kept(s, pid)
	if v == nil || !v.yes || v.n != 2 {
		t.Fatalf("no yes kept for the helper's child %d (a chain of 2): %+v", pid, v)
	}
	if yes, ok := s.kept.get(pid); !ok || !yes {
		t.Fatalf("the kept verdict does not answer: %v, %v", yes, ok)
	}
	c.Process.Kill()
	c.Wait()
	before := openFds(t)
	if l.IsHelper(pid) {
		t.Errorf("the dead child %d is the helper's", pid)
	}
	if kept(s, pid) != nil {
		t.Error("a verdict kept for the dead child")
	}
	if v.refs.Load() != 0 {
		t.Errorf("the dropped verdict holds %d references", v.refs.Load())
	}
	if after := openFds(t); after != before-2 {
		t.Errorf("open descriptors %d after the drop, want %d: the verdict's 2 pidfds closed", after, before-2)
	}
}
