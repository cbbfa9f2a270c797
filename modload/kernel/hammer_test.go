package kernel

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// Every entry point at once, under the race detector: uevents, rescans,
// loads, declines, info and stats, over GOMAXPROCS 1 and 2. The namespace
// ends as the last rescan leaves it: sysfs's devices.
func TestHammerEntryPoints(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprintf("procs=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			f := fakeMachine(t)
			r := newRig(t, Options{SysfsRoot: f.root, Logger: zapNop})
			var seq atomic.Uint64
			var wg sync.WaitGroup
			const rounds = 200
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range rounds {
						n := fmt.Sprintf("hammer%d", (g*rounds+i)%17)
						dp := "/devices/virtual/misc/" + n
						action := []string{"add", "change", "remove", "move", "bind"}[i%5]
						kv := []string{"MAJOR", "10", "MINOR", fmt.Sprint(100 + (g*rounds+i)%17), "DEVNAME", n}
						if action == "move" {
							kv = append(kv, "DEVPATH_OLD", dp+"x")
						}
						r.src.Apply(uev(action, dp, seq.Add(1), kv...))
					}
				}()
			}
			wg.Add(3)
			go func() {
				defer wg.Done()
				for range rounds / 10 {
					if err := r.src.Rescan(); err != nil {
						t.Error(err)
					}
				}
			}()
			go func() {
				defer wg.Done()
				for i := range rounds {
					n := fmt.Sprintf("hammer%d", i%17)
					_ = r.src.Declines("", n)
					_ = r.src.Load(t.Context(), "", n, modloadCaller)
				}
			}()
			go func() {
				defer wg.Done()
				for i := range rounds {
					_, _, _ = r.src.Info(fmt.Sprintf("hammer%d", i%17))
					_ = r.src.Stats()
					_ = r.src.Devices()
				}
			}()
			wg.Wait()
			must(t, r.src.Rescan())
			if diff := r.sysfsDiff(f.root); len(diff) != 0 {
				t.Fatalf("after the last rescan: %v", diff)
			}
			for i := range 17 {
				if p := fmt.Sprintf("hammer%d", i); r.node(p) != "" {
					t.Errorf("%s left after the rescan", p)
				}
			}
			if st := r.src.Stats(); st.Registered != st.Devices {
				t.Errorf("stats %+v", st)
			}
		})
	}
}
