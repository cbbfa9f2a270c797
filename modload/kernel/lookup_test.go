package kernel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/test/loopdev"
)

// resolver puts the source behind package lookup, as the daemon does.
func resolver(r *rig, timeout time.Duration) *lookup.Resolver {
	load := lookup.LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		return r.src.Load(ctx, dir, name, dcache.Caller{Pid: c.Pid, Uid: c.Uid, Gid: c.Gid})
	})
	return lookup.New(r.ns, load, lookup.Options{Timeout: timeout,
		IsLoader: func(c dcache.Caller) bool { return r.src.IsLoader(c.Pid) }})
}

// 200 concurrent lookups of a name modules.devname lists share one load:
// one run of modprobe, and every lookup answers with the kernel's device.
func TestConcurrentMissesRunModprobeOnce(t *testing.T) {
	needKernel(t)
	i := loopdev.Free(t)
	loopdev.RemoveAtCleanup(t, i)
	name := fmt.Sprintf("loop%d", i)
	log := filepath.Join(t.TempDir(), "runs")
	hold := filepath.Join(t.TempDir(), "hold")
	r := startReal(t, Options{
		ModulesDevname: devnameFile(t, fmt.Sprintf("loop %s b7:%d", name, i)),
		Modprobe:       modprobeScript(t, "loop", "KERNEL_TEST_LOOP="+fmt.Sprint(i), "KERNEL_TEST_LOG="+log, "KERNEL_TEST_HOLD="+hold),
	})
	res := resolver(r, wait)
	const lookups = 200
	var wg sync.WaitGroup
	errs := make(chan error, lookups)
	for range lookups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := res.Lookup(t.Context(), r.ns.Root(), name, dcache.Caller{Pid: 1, Origin: dcache.OriginFUSE})
			if err == nil && (n.Type() != dcache.TypeBlock || n.Attr().Major != 7) {
				err = fmt.Errorf("lookup answered %v %+v", n.Type(), n.Attr())
			}
			errs <- err
		}()
	}
	until(t, wait, "one load and every other lookup waiting on it", func() bool {
		st := res.Stats()
		return st.Loads == 1 && st.Waiting == lookups-1
	})
	must(t, os.WriteFile(hold, nil, 0644))
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if runs, _ := os.ReadFile(log); string(runs) != "loop\n" {
		t.Fatalf("modprobe runs: %q, want one", runs)
	}
}

// A modprobe that creates nothing: the lookup is ENOENT at the loader's
// timeout; a name with no modules.devname entry is ENOENT at once, with
// nothing run.
func TestLookupMissEnds(t *testing.T) {
	needKernel(t)
	log := filepath.Join(t.TempDir(), "runs")
	r := startReal(t, Options{
		ModulesDevname: devnameFile(t, "nothing nothing0 c10:250"),
		Modprobe:       modprobeScript(t, "nothing", "KERNEL_TEST_LOG="+log),
	})
	const timeout = 300 * time.Millisecond
	res := resolver(r, timeout)
	start := time.Now()
	_, err := res.Lookup(t.Context(), r.ns.Root(), "nothing0", dcache.Caller{Pid: 1, Origin: dcache.OriginFUSE})
	if took := time.Since(start); !errors.Is(err, syscall.ENOENT) || took < timeout {
		t.Fatalf("lookup of nothing0: %v after %v; want ENOENT after %v", err, took, timeout)
	}
	// Declined at once: not waiting for a timeout of the wait deadline.
	res.SetTimeout(wait)
	start = time.Now()
	for _, name := range []string{"nvidia0", "sda1"} {
		if _, err := res.Lookup(t.Context(), r.ns.Root(), name, dcache.Caller{Pid: 1, Origin: dcache.OriginFUSE}); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("lookup of %s: %v", name, err)
		}
	}
	if took := time.Since(start); took >= wait/2 {
		t.Errorf("declined misses took %v", took)
	}
	// (On a slow machine the run for nothing0 may be killed at the
	// timeout before it logs itself.)
	if runs, _ := os.ReadFile(log); string(runs) != "nothing\n" && string(runs) != "" {
		t.Fatalf("modprobe runs: %q, want only the one for nothing0", runs)
	}
	if st := r.src.Stats(); st.Autoloads != 1 {
		t.Fatalf("autoloads %d, want 1", st.Autoloads)
	}
}

// What the state directory kept for a name (dcache's RegisterHook, which
// package state installs) is applied when the kernel's device comes back.
func TestKeptAttributesApplyOnAdd(t *testing.T) {
	kept := func(p string, s dcache.Spec) dcache.Spec {
		if p == "hidraw3" {
			s.Mode, s.Gid = 0640, 100
		}
		return s
	}
	ns := dcache.New(dcache.Options{RegisterHook: kept, NegativeTTL: -1})
	src, err := New(Options{Namespace: DcacheNamespace{NS: ns, Caller: kernelCaller}, SysfsRoot: t.TempDir(),
		ModulesDevname: filepath.Join(t.TempDir(), "none")})
	must(t, err)
	src.Apply(uev("add", "/devices/x/hidraw/hidraw3", 1, "SUBSYSTEM", "hidraw", "MAJOR", "241", "MINOR", "3", "DEVNAME", "hidraw3"))
	n, err := ns.Resolve("hidraw3")
	must(t, err)
	if a := n.Attr(); a.Mode&07777 != 0640 || a.Gid != 100 || a.Major != 241 {
		t.Fatalf("hidraw3: %+v", a)
	}
}
