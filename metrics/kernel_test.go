package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devfsd/devfsd/modload/kernel"
)

// The kernel source's counters are read at scrape time.
func TestScrapeKernel(t *testing.T) {
	st := kernel.Stats{Received: map[string]uint64{"add": 3, "remove": 1, "change": 0},
		Forged: 2, Malformed: 4, Stale: 5, Overruns: 6, Rescans: 7, Autoloads: 8, AutoloadFailures: 1,
		Collisions: 9, Devices: 10, Registered: 11}
	reg := prometheus.NewRegistry()
	New(reg, Sources{Kernel: func() kernel.Stats { return st }})
	scrape := func() string {
		rec := httptest.NewRecorder()
		Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		b, _ := io.ReadAll(rec.Body)
		return string(b)
	}
	body := scrape()
	for _, want := range []string{
		`devfsd_kernel_uevents_total{action="add"} 3`,
		`devfsd_kernel_uevents_total{action="remove"} 1`,
		`devfsd_kernel_uevents_total{action="change"} 0`,
		`devfsd_kernel_uevents_ignored_total{reason="forged"} 2`,
		`devfsd_kernel_uevents_ignored_total{reason="malformed"} 4`,
		`devfsd_kernel_uevents_ignored_total{reason="stale"} 5`,
		`devfsd_kernel_overruns_total 6`,
		`devfsd_kernel_rescans_total 7`,
		`devfsd_kernel_autoloads_total 8`,
		`devfsd_kernel_autoload_failures_total 1`,
		`devfsd_kernel_collisions_total 9`,
		`devfsd_kernel_devices 10`,
		`devfsd_kernel_registered 11`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("no %q in\n%s", want, body)
		}
	}
	st.Received = map[string]uint64{"add": 4}
	if body := scrape(); !strings.Contains(body, `devfsd_kernel_uevents_total{action="add"} 4`+"\n") {
		t.Errorf("the second scrape did not read the stats again:\n%s", body)
	}
}
