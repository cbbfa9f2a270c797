package metrics

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/lookup"
)

func TestScrape(t *testing.T) {
	ns := dcache.New(dcache.Options{})
	ns.Register("null", dcache.Spec{Type: dcache.TypeChar, Major: 1, Minor: 3}, dcache.Caller{})
	reg := prometheus.NewRegistry()
	var m *Metrics
	res := lookup.New(ns, lookup.LoaderFunc(func(context.Context, string, string, dcache.Caller) error { return nil }),
		lookup.Options{Observe: func(mi lookup.MissInfo) { m.ObserveLoad(mi) }})
	m = New(reg, Sources{Namespace: ns, Lookup: res.Stats})
	res.Lookup(context.Background(), ns.Root(), "null", dcache.Caller{})
	res.Lookup(context.Background(), ns.Root(), "nothing", dcache.Caller{})
	res.Lookup(context.Background(), ns.Root(), "nothing", dcache.Caller{})
	m.ObserveOp(fs.OpLookup, time.Millisecond)
	m.Reloaded("ok")

	rec := httptest.NewRecorder()
	Handler(reg).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, want := range []string{
		`devfsd_lookups_total{result="hit"} 1`,
		`devfsd_lookups_total{result="miss"} 1`,
		`devfsd_lookups_total{result="negative_hit"} 1`,
		`devfsd_loads_total{loader="unknown",result="absent"} 1`,
		`devfsd_loads_started_total 1`,
		`devfsd_lookup_inflight_records 0`,
		`devfsd_nodes{type="char"} 1`,
		`devfsd_nodes{type="dir"} 1`,
		`devfsd_fuse_request_duration_seconds_count{op="LOOKUP"} 1`,
		`devfsd_reloads_total{result="ok"} 1`,
		`devfsd_load_duration_seconds_count{loader="unknown"} 1`,
	} {
		if !strings.Contains(string(body), want+"\n") {
			t.Errorf("no %q in\n%s", want, body)
		}
	}
}

// Observing a request allocates nothing.
func TestObserveOpAllocs(t *testing.T) {
	m := New(prometheus.NewRegistry(), Sources{})
	if n := testing.AllocsPerRun(1000, func() { m.ObserveOp(fs.OpGetAttr, time.Microsecond) }); n != 0 {
		t.Errorf("ObserveOp allocates %v times", n)
	}
}
