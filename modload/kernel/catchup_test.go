package kernel

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/test/loopdev"
)

// A lookup miss applies the uevents the kernel queued before it: these
// tests use the real uevent socket and real loop devices.

// startWithoutReader returns a source that listens and has coldplugged,
// with no reader: only lookup misses read its socket.
func startWithoutReader(t *testing.T, opts Options) *rig {
	t.Helper()
	needKernel(t)
	r := newRig(t, opts)
	if _, err := r.src.listen(); err != nil {
		t.Fatal(err)
	}
	close(r.src.done) // no reader to wait for in Close
	must(t, r.src.Coldplug())
	return r
}

// sourcePort is the netlink port of the source's socket.
func sourcePort(t *testing.T, s *Source) uint32 {
	t.Helper()
	var port uint32
	must(t, s.conn.Load().rc.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		must(t, err)
		port = sa.(*unix.SockaddrNetlink).Pid
	}))
	return port
}

func TestMissAppliesQueuedUevents(t *testing.T) {
	r := startWithoutReader(t, Options{})
	// A uevent of another device queued while coldplug ran is stale by
	// right; the counts from here on must not move.
	r.src.Declines("", "no-such-device")
	st0 := r.src.Stats()
	i := loopdev.Add(t)
	name := fmt.Sprintf("loop%d", i)
	if r.node(name) != "" {
		t.Fatalf("%s registered with no reader and no miss", name)
	}
	// The add was queued before LOOP_CTL_ADD returned: the first miss of
	// the name applies it and does not decline.
	if r.src.Declines("", name) {
		t.Fatalf("the first miss of %s after LOOP_CTL_ADD declined it", name)
	}
	want := "block " + loopdev.Number(t, i) + " 0660 0:6"
	if got := r.node(name); got != want {
		t.Fatalf("%s after the miss: %q, want %q", name, got, want)
	}
	// A miss of any name applies the remove.
	loopdev.Remove(t, i)
	if !r.src.Declines("", "no-such-device") {
		t.Fatal("no-such-device not declined")
	}
	if r.node(name) != "" {
		t.Fatalf("%s still registered after LOOP_CTL_REMOVE and a miss", name)
	}
	if !r.src.Declines("", name) {
		t.Fatalf("%s not declined once removed", name)
	}

	// Load catches up too.
	j := loopdev.Add(t)
	other := fmt.Sprintf("loop%d", j)
	ctx, cancel := contextWithTimeout(t, wait)
	defer cancel()
	if err := r.src.Load(ctx, "", other, modloadCaller); err != nil {
		t.Fatalf("load of %s after LOOP_CTL_ADD: %v", other, err)
	}
	if r.node(other) == "" {
		t.Fatalf("%s not registered by the load", other)
	}

	// A forged message queued on the socket is still ignored.
	forged := fmt.Sprintf("forged%d", rand.IntN(1<<30))
	sendForged(t, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: sourcePort(t, r.src)},
		msg("add@/devices/virtual/block/"+forged, "ACTION=add", "DEVPATH=/devices/virtual/block/"+forged,
			"SUBSYSTEM=block", "MAJOR=7", "MINOR=999998", "DEVNAME="+forged, fmt.Sprintf("SEQNUM=%d", uint64(1)<<62)))
	if !r.src.Declines("", forged) {
		t.Fatal("a forged add made its name known")
	}
	if r.node(forged) != "" {
		t.Fatal("a forged add registered a node")
	}
	if st := r.src.Stats(); st.Forged != st0.Forged+1 || st.Stale != st0.Stale || st.Malformed != st0.Malformed || st.Overruns != 0 {
		t.Errorf("stats %+v, at the start %+v", st, st0)
	}
}

// An overrun met by a miss is answered as the reader answers it: the
// queue drained, then a rescan, before the miss answers.
func TestMissAfterOverrunRescans(t *testing.T) {
	r := startWithoutReader(t, Options{ReceiveBuffer: 1}) // the kernel's smallest
	gone := loopdev.Add(t)
	goneName := fmt.Sprintf("loop%d", gone)
	if r.src.Declines("", goneName) || r.node(goneName) == "" {
		t.Fatalf("%s not registered by a miss", goneName)
	}
	num := loopdev.Number(t, gone)
	const burst = 1000
	for range burst {
		must(t, os.WriteFile(filepath.Join("/sys/dev/block", num, "uevent"), []byte("change"), 0))
	}
	came := loopdev.Add(t)
	cameName := fmt.Sprintf("loop%d", came)
	loopdev.Remove(t, gone)
	if r.src.Declines("", cameName) {
		t.Fatalf("the miss of %s declined it after an overrun", cameName)
	}
	st := r.src.Stats()
	if st.Overruns < 1 || st.Rescans < 1 {
		t.Fatalf("stats %+v: want an overrun and a rescan", st)
	}
	if r.node(cameName) == "" || r.node(goneName) != "" {
		t.Fatalf("after the miss: %s (came) %q, %s (gone) %q", cameName, r.node(cameName), goneName, r.node(goneName))
	}
	// Other tests on the machine make devices meanwhile: each miss
	// catches up, so the tree converges to sysfs.
	var diff []string
	if !pollFor(wait, func() bool { r.src.Declines("", "no-such-device"); diff = r.sysfsDiff("/sys"); return len(diff) == 0 }) {
		t.Fatalf("the namespace does not converge to sysfs:\n%s", strings.Join(diff, "\n"))
	}
	t.Logf("burst of %d: %d applied, %d overruns, %d rescans", burst, st.Received["change"], st.Overruns, st.Rescans)
}

// With the reader running, a miss still sees every uevent queued before
// it, in order: each synthetic change of a loop device, written just
// before a miss, is applied when the miss returns, and none is applied
// out of order (stale), while other goroutines miss, load and read the
// source all the time. A new device is seen by its first miss.
func TestHammerCatchUpWithTheReader(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprintf("procs=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			r := startReal(t, Options{Logger: zapNop})
			i := loopdev.Add(t)
			name := fmt.Sprintf("loop%d", i)
			until(t, wait, name+" registered", func() bool { return r.node(name) != "" })
			num := loopdev.Number(t, i)
			// What was queued while coldplug ran may be stale by right;
			// a miss applies it, and the counts from here on must not move.
			r.src.Declines("", "no-such-device")
			st0 := r.src.Stats()

			var stop atomic.Bool
			var wg sync.WaitGroup
			for g := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for k := 0; !stop.Load(); k++ {
						_ = r.src.Declines("", fmt.Sprintf("hammer%d-%d", g, k%7))
						_ = r.src.Load(t.Context(), "", name, modloadCaller)
						_, _, _ = r.src.Info(name)
						_ = r.src.Stats()
					}
				}()
			}
			defer func() { stop.Store(true); wg.Wait() }()

			const rounds = 400
			for k := range rounds {
				d, _, _ := r.src.Info(name)
				must(t, os.WriteFile(filepath.Join("/sys/dev/block", num, "uevent"), []byte("change"), 0))
				if !r.src.Declines("", "no-such-device") {
					t.Fatal("no-such-device not declined")
				}
				if now, _, _ := r.src.Info(name); now.Seq <= d.Seq {
					t.Fatalf("round %d: the change queued before the miss not applied when it returned (SEQNUM %d, was %d)", k, now.Seq, d.Seq)
				}
				if k%20 == 0 {
					j := loopdev.Add(t)
					other := fmt.Sprintf("loop%d", j)
					if r.src.Declines("", other) || r.node(other) == "" {
						t.Fatalf("round %d: the first miss of %s after LOOP_CTL_ADD did not see it", k, other)
					}
					loopdev.Remove(t, j)
					if !r.src.Declines("", other) || r.node(other) != "" {
						t.Fatalf("round %d: the first miss of %s after LOOP_CTL_REMOVE still saw it", k, other)
					}
				}
			}
			stop.Store(true)
			wg.Wait()
			if st := r.src.Stats(); st.Stale != st0.Stale || st.Malformed != st0.Malformed || st.Overruns != 0 || st.Received["change"] < st0.Received["change"]+rounds {
				t.Errorf("stats %+v, at the start %+v", st, st0)
			}
		})
	}
}

// Through package lookup, as the daemon asks (Then: Declines, then Load),
// with the daemon's negative cache on: the first lookup after
// LOOP_CTL_ADD finds the device though nothing but the lookup read the
// socket; and a miss cached an hour before a device existed does not
// hide it once the reader has applied its add.
func TestResolverMissesAndTheNegativeCache(t *testing.T) {
	needKernel(t)
	newSource := func(t *testing.T, reader bool) (*Source, *dcache.Namespace, *lookup.Resolver) {
		ns := dcache.New(dcache.Options{NegativeTTL: time.Hour})
		src, err := New(Options{Namespace: DcacheNamespace{NS: ns, Caller: kernelCaller}, Logger: zapNop,
			ModulesDevname: filepath.Join(t.TempDir(), "no-modules.devname")})
		must(t, err)
		t.Cleanup(func() { src.Close() })
		if reader {
			must(t, src.Start())
		} else {
			_, err := src.listen()
			must(t, err)
			close(src.done)
			must(t, src.Coldplug())
		}
		return src, ns, lookup.New(ns, Then{Source: src}, lookup.Options{Timeout: wait})
	}
	user := dcache.Caller{Pid: 1, Origin: dcache.OriginFUSE}

	t.Run("first lookup", func(t *testing.T) {
		_, ns, res := newSource(t, false)
		i := loopdev.Add(t)
		name := fmt.Sprintf("loop%d", i)
		n, err := res.Lookup(t.Context(), ns.Root(), name, user)
		if err != nil || n.Type() != dcache.TypeBlock {
			t.Fatalf("the first lookup of %s after LOOP_CTL_ADD: %v", name, err)
		}
	})
	t.Run("cached miss", func(t *testing.T) {
		_, ns, res := newSource(t, true)
		i := loopdev.Free(t)
		loopdev.RemoveAtCleanup(t, i)
		name := fmt.Sprintf("loop%d", i)
		if _, err := res.Lookup(t.Context(), ns.Root(), name, user); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("lookup of %s before LOOP_CTL_ADD: %v", name, err)
		}
		ns.Root().LockMu()
		negative := ns.Root().EntryLocked(name).Negative
		ns.Root().UnlockMu()
		if !negative {
			t.Fatalf("the miss of %s is not cached", name)
		}
		must(t, loopdev.Ctl(unix.LOOP_CTL_ADD, i))
		until(t, wait, name+" found by a lookup despite the cached miss", func() bool {
			n, err := res.Lookup(t.Context(), ns.Root(), name, user)
			return err == nil && n.Type() == dcache.TypeBlock
		})
	})
}
