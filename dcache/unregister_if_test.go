package dcache

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestUnregisterIf(t *testing.T) {
	rec := &recorder{}
	ns := New(Options{Sink: rec})
	dev, err := ns.Register("input/event0", Spec{Type: TypeChar, Major: 13, Minor: 64}, loaderCaller)
	if err != nil {
		t.Fatal(err)
	}
	input, _ := ns.Resolve("input")
	file, _ := ns.Root().Mknod("file", syscall.S_IFREG|0644, 0, 0, fuseCaller)
	rec.take()
	for _, tc := range []struct {
		what string
		path string
		ino  uint64
		want syscall.Errno
	}{
		{"nothing there", "input/event1", dev.Ino(), syscall.ENOENT},
		{"a parent missing", "snd/pcm", dev.Ino(), syscall.ENOENT},
		{"a parent not a directory", "file/x", dev.Ino(), syscall.ENOENT},
		{"another node there", "input/event0", dev.Ino() + 1000, syscall.ESTALE},
		{"a directory with entries", "input", input.Ino(), syscall.ENOTEMPTY},
		{"the root", "", 1, syscall.EBUSY},
		{"a bad path", "input/..", input.Ino(), syscall.EINVAL},
	} {
		wantErrno(t, tc.what, ns.UnregisterIf(tc.path, tc.ino, loaderCaller), tc.want)
	}
	if evs := rec.take(); len(evs) != 0 {
		t.Fatalf("refused UnregisterIf raised events: %+v", evs)
	}
	if n, err := ns.Resolve("input/event0"); err != nil || n != dev {
		t.Fatalf("input/event0 after the refusals: %v", err)
	}

	wantErrno(t, "the node", ns.UnregisterIf("input/event0", dev.Ino(), loaderCaller), 0)
	wantErrno(t, "the emptied directory", ns.UnregisterIf("input", input.Ino(), loaderCaller), 0)
	wantErrno(t, "a regular file", ns.UnregisterIf("file", file.Ino(), loaderCaller), 0)
	evs := rec.take()
	want := []string{"input/event0", "input", "file"}
	if len(evs) != len(want) {
		t.Fatalf("events %+v, want UNREGISTER of %v", evs, want)
	}
	for i, ev := range evs {
		if ev.Kind != KindUnregister || ev.Path != want[i] || ev.Caller != loaderCaller {
			t.Errorf("event %d: %v %q %+v, want UNREGISTER %q", i, ev.Kind, ev.Path, ev.Caller, want[i])
		}
	}
	if ns.Root().Len() != 0 || dev.Attr().Nlink != 0 {
		t.Fatalf("root has %d entries, the device nlink %d", ns.Root().Len(), dev.Attr().Nlink)
	}
	// The removed directory is dead, as after rmdir.
	_, err = input.Mknod("x", syscall.S_IFREG, 0, 0, fuseCaller)
	wantErrno(t, "create in the removed directory", err, syscall.ENOENT)
	if a := ns.Root().Attr(); a.Nlink != 2 {
		t.Errorf("root nlink %d", a.Nlink)
	}
}

// A node made at the name after the remover learnt its inode number —
// the registered node unlinked and another made, by a user, at any
// moment — is never removed: the check and the removal are one step.
// Each round, the remover registers x and removes it by its number while
// a user unlinks x and makes one of their own; no UNREGISTER may name
// the user's node, and the user's node that ends up at x is still there.
func TestHammerUnregisterIfNeverRemovesAnotherNode(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprintf("procs=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			var mine sync.Map // inode numbers the remover registered
			var bad atomic.Uint64
			sink := sinkFunc(func(ev Event) {
				if ev.Kind == KindUnregister {
					if _, ok := mine.Load(ev.Ino); !ok {
						bad.Store(ev.Ino)
					}
				}
			})
			ns := New(Options{Sink: sink})
			root := ns.Root()
			stop := time.Now().Add(hammerDuration(t) / 2)
			var wg sync.WaitGroup
			var removed, refused atomic.Uint64
			wg.Add(2)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) && bad.Load() == 0 {
					n, err := ns.Register("x", Spec{Type: TypeChar, Major: 1, Minor: 3}, loaderCaller)
					if err != nil {
						runtime.Gosched() // the user's node is there
						continue
					}
					mine.Store(n.Ino(), true)
					if ns.UnregisterIf("x", n.Ino(), loaderCaller) == nil {
						removed.Add(1)
					} else {
						refused.Add(1)
					}
				}
			}()
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) && bad.Load() == 0 {
					_ = root.Unlink("x", fuseCaller) // the remover's node, or the user's own
					runtime.Gosched()
					_, _ = root.Mknod("x", syscall.S_IFCHR|0600, 1, 5, fuseCaller)
					runtime.Gosched()
				}
			}()
			wg.Wait()
			if ino := bad.Load(); ino != 0 {
				t.Fatalf("UnregisterIf removed node %d, which it never registered", ino)
			}
			t.Logf("%d removed, %d refused", removed.Load(), refused.Load())
			if removed.Load() == 0 {
				t.Fatal("the remover never removed its own node")
			}
		})
	}
}

// sinkFunc adapts a function to a Sink.
type sinkFunc func(Event)

func (f sinkFunc) Event(ev Event) { f(ev) }
