package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/wire"
)

// Scrapes of /metrics during a stress of hits, misses, shared loads and
// changes (with the loader delayed so that loads overlap and waiters
// queue) show the counters moving, never backwards, and consistent: loads
// never outnumber misses, finished loads never outnumber started ones;
// once the stress ends the in-flight and waiter gauges are back to 0. The
// --metrics-addr listener serves the same.
func TestMetricsDuringStress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the daemon takes it
	d := startCtlOpts(t, opts{env: []string{"DEVFSD_TEST_LOADER_DELAY=2ms"}},
		"--negative-timeout=20ms", "--entry-timeout=0", "--metrics-addr="+addr, "--state-dir="+t.TempDir())

	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dir := d.path(fmt.Sprintf("w%d", w))
			os.Mkdir(dir, 0o755)
			for i := 0; !stop.Load(); i++ {
				var st unix.Stat_t
				unix.Lstat(d.path("null"), &st)                          // hit
				unix.Lstat(d.path(fmt.Sprintf("miss%d", i%16)), &st)     // shared misses
				unix.Lstat(d.path(fmt.Sprintf("w%d/gone%d", w, i)), &st) // a miss each
				p := fmt.Sprintf("%s/n%d", dir, i%8)
				unix.Unlink(p)
				unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3)))
				unix.Chmod(p, 0o640)
			}
		}()
	}
	t.Cleanup(func() { stop.Store(true); wg.Wait() })

	counters := []string{`devfsd_lookups_total{result="hit"}`, `devfsd_lookups_total{result="miss"}`,
		`devfsd_loads_started_total`, `devfsd_fuse_request_duration_seconds_count{op="LOOKUP"}`,
		`devfsd_fuse_request_duration_seconds_count{op="MKNOD"}`, `devfsd_events_emitted_total`,
		`devfsd_state_commits_total`}
	prev := scrape(t, d)
	sawInflight, sawWaiters := false, false
	for i := 0; i < 10; i++ {
		until(t, "the counters move", func() bool {
			return scrape(t, d)[`devfsd_loads_started_total`] > prev[`devfsd_loads_started_total`]+5
		})
		// Changes through the socket. The kernel may cache the name's
		// absence (looked up just before), so the registration queues an
		// entry notify; then the kernel holds the name (looked up), so
		// its unregistration queues a delete notify, which it accepts.
		name := fmt.Sprintf("ctl%d", i)
		var st unix.Stat_t
		unix.Lstat(d.path(name), &st)
		major, minor := int64(1), int64(3)
		if _, err := d.c.Register(context.Background(), wire.RegisterRequest{Path: name,
			Type: "char", Major: &major, Minor: &minor}); err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		if err := unix.Lstat(d.path(name), &st); err != nil {
			t.Fatalf("lstat %s right after its registration: %v", name, err)
		}
		if err := d.c.Unregister(context.Background(), name); err != nil {
			t.Fatalf("unregister %s: %v", name, err)
		}
		m := scrape(t, d)
		for _, c := range counters {
			if m[c] < prev[c] {
				t.Errorf("scrape %d: %s went back from %v to %v", i, c, prev[c], m[c])
			}
		}
		misses, started, finished := m[`devfsd_lookups_total{result="miss"}`], m[`devfsd_loads_started_total`], m[`devfsd_loads_finished_total`]
		if started > misses || finished > started {
			t.Errorf("scrape %d: %v misses, %v loads started, %v finished; want finished <= started <= misses", i, misses, started, finished)
		}
		sawInflight = sawInflight || m[`devfsd_lookup_inflight_records`] > 0
		sawWaiters = sawWaiters || m[`devfsd_lookup_waiters`] > 0
		prev = m
	}
	stop.Store(true)
	wg.Wait()
	var last map[string]float64
	untilOr(t, "in-flight records and waiters back to 0", func() bool {
		last = scrape(t, d)
		return last[`devfsd_lookup_inflight_records`] == 0 && last[`devfsd_lookup_waiters`] == 0 && last[`devfsd_live_requests`] == 0
	}, func() string {
		return fmt.Sprintf("in flight %v, waiters %v, live requests %v", last[`devfsd_lookup_inflight_records`],
			last[`devfsd_lookup_waiters`], last[`devfsd_live_requests`])
	})
	m := scrape(t, d)
	if finished, started := sum(m, "devfsd_loads_total"), m[`devfsd_loads_started_total`]; finished != started {
		t.Errorf("at rest %v loads finished of %v started", finished, started)
	}
	for _, c := range counters {
		if m[c] == 0 {
			t.Errorf("%s never moved", c)
		}
	}
	if m[`devfsd_nodes{type="char"}`] < 5 || m[`devfsd_kernel_notify_total{result="sent"}`] == 0 {
		t.Errorf("nodes %v, notifies %v", m[`devfsd_nodes{type="char"}`], m[`devfsd_kernel_notify_total{result="sent"}`])
	}
	t.Logf("at rest: %v lookups missed, %v loads; in flight seen %v, waiters seen %v; %v FUSE LOOKUPs; %v journal commits",
		m[`devfsd_lookups_total{result="miss"}`], m[`devfsd_loads_started_total`], sawInflight, sawWaiters,
		m[`devfsd_fuse_request_duration_seconds_count{op="LOOKUP"}`], m[`devfsd_state_commits_total`])

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("--metrics-addr: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if tcp := parseMetrics(string(body)); tcp[`devfsd_loads_started_total`] != m[`devfsd_loads_started_total`] {
		t.Errorf("--metrics-addr serves %v loads, the socket %v", tcp[`devfsd_loads_started_total`], m[`devfsd_loads_started_total`])
	}
}
