package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Reload under load: lookups run all along; the negative timeout and the
// loader chain change (devfsd ctl reload, then SIGHUP); no request fails;
// the new behaviour shows at once, including for a miss the kernel had
// cached for an hour; an invalid configuration is refused whole and
// changes nothing.
func TestReloadUnderLoad(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "devfsd.yaml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(cfgPath, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("negative_timeout: 1h\nloader: none\n")
	d := startCtl(t, "--config="+cfgPath)

	// Before: loop3 is a cached miss (the kernel holds it for an hour).
	if err := unix.Lstat(d.path("loop3"), new(unix.Stat_t)); err != unix.ENOENT {
		t.Fatalf("loop3 with loader none: %v", err)
	}
	m := scrape(t, d)
	for i := 0; i < 20; i++ {
		unix.Lstat(d.path("nothing-here"), new(unix.Stat_t))
	}
	if got := scrape(t, d)[`devfsd_loads_started_total`] - m[`devfsd_loads_started_total`]; got > 1 {
		t.Fatalf("%v loads for 20 stats of one name with a 1h negative timeout", got)
	}

	// The load: stats of a name that exists, of loop3 (ENOENT until the
	// builtin loader comes, then found, never back) and of a missing
	// name. Any other answer is a failed request.
	//
	// "Never back" is judged by when each stat started: clock orders the
	// starts and ends of the stats of loop3, foundEnd is the earliest end
	// of one that found it. A stat that started before that end may still
	// answer ENOENT (it raced the load, and the answer it saw was true when
	// it looked); one that started after it must find loop3.
	var stop atomic.Bool
	var failures atomic.Int64
	var firstFailure atomic.Value
	var loop3Found atomic.Bool
	var clock, foundEnd atomic.Int64
	fail := func(err error) {
		failures.Add(1)
		firstFailure.CompareAndSwap(nil, err)
	}
	found := func(end int64) {
		for {
			f := foundEnd.Load()
			if (f != 0 && f <= end) || foundEnd.CompareAndSwap(f, end) {
				break
			}
		}
		loop3Found.Store(true)
	}
	var wg sync.WaitGroup
	var stats atomic.Int64
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				var st unix.Stat_t
				if err := unix.Lstat(d.path("null"), &st); err != nil {
					fail(errors.New("null: " + err.Error()))
				}
				started := clock.Add(1)
				err := unix.Lstat(d.path("loop3"), &st)
				ended := clock.Add(1)
				switch f := foundEnd.Load(); {
				case err == nil:
					found(ended)
				case err == unix.ENOENT && (f == 0 || started < f):
				case err == unix.ENOENT:
					fail(fmt.Errorf("loop3: ENOENT from a stat that started (tick %d) after one had found it (tick %d)", started, f))
				default:
					fail(errors.New("loop3: " + err.Error()))
				}
				if err := unix.Lstat(d.path("nothing-here"), &st); err != unix.ENOENT {
					fail(errors.New("nothing-here: " + errString(err)))
				}
				stats.Add(3)
			}
		}()
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() })
	until(t, "lookups running", func() bool { return stats.Load() > 300 })

	// An invalid file is refused whole: nothing changes.
	write("negative_timeout: 50ms\nloader: builtin\nmax_nodes: banana\n")
	if _, errOut, code := d.ctl(t, nil, "reload"); code != 1 || !strings.Contains(errOut, "invalid_config") || !strings.Contains(errOut, "max_nodes") {
		t.Fatalf("reload of an invalid file: exit %d %q", code, errOut)
	}
	write("negative_timeout: 50ms\nloader: builtin\nmax_nodes: 7\n") // valid, but needs a restart
	if _, errOut, code := d.ctl(t, nil, "reload"); code != 1 || !strings.Contains(errOut, "max_nodes") {
		t.Fatalf("reload changing max_nodes: exit %d %q", code, errOut)
	}
	if loop3Found.Load() {
		t.Fatal("loop3 appeared after a refused reload")
	}

	// The real change, through devfsd ctl reload.
	write("negative_timeout: 50ms\nloader: builtin\n")
	out := d.mustCtl(t, "reload")
	if !strings.Contains(out, "loader") || !strings.Contains(out, "negative_timeout") {
		t.Fatalf("reload printed %q", out)
	}
	// The builtin loader answers loop3 now, although the kernel had its
	// miss cached for an hour: the reload invalidated it.
	until(t, "loop3 found through the new loader", loop3Found.Load)
	// The negative timeout is 50ms now: repeated misses of one name go
	// to the loader again.
	before := scrape(t, d)[`devfsd_loads_started_total`]
	until(t, "misses loaded again after the new negative timeout", func() bool {
		return scrape(t, d)[`devfsd_loads_started_total`] >= before+3
	})
	// Names that exist were left alone: positive lookups kept hitting.

	// SIGHUP: back to loader none; a module not loaded yet stays absent.
	write("negative_timeout: 50ms\nloader: none\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	until(t, "the SIGHUP reload applied", func() bool {
		s, err := d.c.Stats(context.Background())
		return err == nil && s.Fallback == "none"
	})
	if err := unix.Lstat(d.path("kvm"), new(unix.Stat_t)); err != unix.ENOENT {
		t.Fatalf("kvm with loader none after SIGHUP: %v", err)
	}

	stop.Store(true)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d requests failed during the reloads; first: %v", n, firstFailure.Load())
	}
	m = scrape(t, d)
	if m[`devfsd_reloads_total{result="ok"}`] != 2 || m[`devfsd_reloads_total{result="invalid"}`] != 2 {
		t.Errorf("reload counters: ok %v invalid %v", m[`devfsd_reloads_total{result="ok"}`], m[`devfsd_reloads_total{result="invalid"}`])
	}
	t.Logf("%d stats during the reloads, none failed", stats.Load())
	if !d.alive() || !mounted(t, d.mnt) {
		t.Fatal("the daemon or its mount went away")
	}
}

func errString(err error) string {
	if err == nil {
		return "success"
	}
	return err.Error()
}
