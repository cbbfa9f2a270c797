// Package metrics exposes devfsd's counters as Prometheus metrics. Only cmd
// builds the registry (as only cmd builds the logger) and hands it to New
// with the daemon's parts; the layers themselves never import Prometheus.
//
// Most values already exist as atomic counters in the layers (lookup
// outcomes, in-flight records, notifies, events, nodes by type, live
// requests) and are read when the registry is scraped, so the hot paths
// pay nothing for them. Two things are observed as they happen: each
// FUSE request's latency (fs.OpObserver) and each load (lookup's Observe
// hook, on the miss path).
//
// Request latency is observed on every FUSE request, from the handler
// goroutines of several CPUs at once, so it is kept in a sharded histogram
// rather than a prometheus HistogramVec, whose children put their count,
// buckets and float sum (a CAS loop) on cache lines every CPU writes: one
// shard per P (picked by refcount.ProcHint, as sync/refcount picks its
// shards), each on its own cache lines, holding per op and bucket an atomic
// count and per op the sum in integer nanoseconds. Observe is a short scan
// of the bucket bounds in nanoseconds and two atomic adds, with no float
// math, lock or allocation. A custom collector sums the shards on each
// scrape into one const histogram per op, with the name, help, label and
// buckets the HistogramVec had, every op present from the start.
//
// Loads resolve their counter and histogram children once per (loader,
// result) pair and keep them in a copy-on-write map read without a lock,
// so a load does not hash label values into the vecs each time.
//
// # Metrics
//
//	devfsd_lookups_total{result="hit|negative_hit|miss"}   step 1 of each lookup
//	devfsd_loads_started_total                             loads started (<= misses)
//	devfsd_loads_finished_total                            loads finished (<= started; one snapshot with the above)
//	devfsd_loads_total{loader,result}                      loads finished: found, absent, timeout, error
//	devfsd_load_duration_seconds{loader}                   histogram
//	devfsd_lookup_inflight_records                         records published now
//	devfsd_lookup_waiters                                  lookups and changes waiting on one now
//	devfsd_fuse_request_duration_seconds{op}               histogram; _count is requests by opcode
//	devfsd_live_requests                                   FUSE requests being served
//	devfsd_kernel_notify_total{result="sent|failed|dropped"}
//	devfsd_events_emitted_total                            events the namespace queued
//	devfsd_events_delivered_total                          events handed to socket consumers
//	devfsd_events_overrun_total                            events consumers missed (full buffers)
//	devfsd_nodes{type}                                     linked nodes by type
//	devfsd_state_commits_total, devfsd_state_commit_seconds_total, devfsd_state_entries
//	devfsd_audit_suppressed_total                          audit lines held back by the rate limit
//	devfsd_reloads_total{result="ok|invalid|failed"}
//	devfsd_kernel_uevents_total{action}                    uevents applied or stale, by action (devices: kernel)
//	devfsd_kernel_uevents_ignored_total{reason="forged|malformed|stale"}
//	devfsd_kernel_overruns_total                           receive buffer overruns (uevents lost)
//	devfsd_kernel_rescans_total                            rescans of sysfs after start (overrun, trigger)
//	devfsd_kernel_autoloads_total, devfsd_kernel_autoload_failures_total  modprobe runs
//	devfsd_kernel_collisions_total                         kernel names taken by another node
//	devfsd_kernel_devices, devfsd_kernel_registered        devices known, nodes registered for them
package metrics

import (
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/devfsd/devfsd/control"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/modload/kernel"
	"github.com/devfsd/devfsd/state"
)

// Sources are where the scraped values come from. Nil fields leave their
// metrics out.
type Sources struct {
	Namespace  *dcache.Namespace
	Lookup     func() lookup.Stats
	Server     func() fs.Stats
	Hub        func() control.HubStats
	State      func() state.Stats
	Suppressed func() uint64       // audit lines held back
	Kernel     func() kernel.Stats // the kernel device source's counters
}

// Metrics holds what is observed as it happens.
type Metrics struct {
	ops     *opHist
	loads   *prometheus.CounterVec
	loadDur *prometheus.HistogramVec
	reloads *prometheus.CounterVec

	// loadChildren maps each (loader, result) pair seen so far to its
	// resolved children. The map is never modified once published:
	// ObserveLoad reads it without a lock, and a new pair is added by
	// copying it under loadMu and storing the copy.
	loadChildren atomic.Pointer[map[loadKey]*loadChild]
	loadMu       sync.Mutex
	// lastLoad is the entry of loadChildren the last load used: a storm of
	// misses has one (loader, result) pair, compared here without hashing
	// two strings (their bytes are the same constants, so == is a pointer
	// comparison). Never nil after New.
	lastLoad atomic.Pointer[loadChild]
}

// loadKey is the label values of one devfsd_loads_total series.
type loadKey struct{ loader, result string }

// loadChild is a loadKey's counter and its loader's duration histogram.
type loadChild struct {
	key   loadKey
	count prometheus.Counter
	dur   prometheus.Observer
}

// Latency buckets: FUSE requests take microseconds to (loads) seconds.
var (
	opBuckets   = prometheus.ExponentialBuckets(10e-6, 4, 10) // 10µs .. 2.6s
	loadBuckets = prometheus.ExponentialBuckets(100e-6, 4, 10)
)

// New registers devfsd's metrics in reg.
func New(reg prometheus.Registerer, src Sources) *Metrics {
	m := &Metrics{
		loads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devfsd_loads_total", Help: "Loads finished, by the loader asked and the result (found, absent, timeout, error).",
		}, []string{"loader", "result"}),
		loadDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "devfsd_load_duration_seconds", Help: "Time from a miss to the end of its load.", Buckets: loadBuckets,
		}, []string{"loader"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devfsd_reloads_total", Help: "Configuration reloads, by result (ok, invalid, failed).",
		}, []string{"result"}),
	}
	m.ops = newOpHist()
	m.loadChildren.Store(&map[loadKey]*loadChild{})
	m.lastLoad.Store(&loadChild{}) // matches no key: ObserveLoad never leaves the loader empty
	for _, r := range []string{"ok", "invalid", "failed"} {
		m.reloads.WithLabelValues(r)
	}
	reg.MustRegister(m.loads, m.loadDur, m.reloads, m.ops)

	counter := func(name, help string, labels prometheus.Labels, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, f))
	}
	gauge := func(name, help string, labels prometheus.Labels, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: labels}, f))
	}
	if f := src.Lookup; f != nil {
		// One snapshot per scrape, so that the values are consistent
		// with each other (loads started <= misses).
		reg.MustRegister(lookupCollector{f})
	}
	if f := src.Server; f != nil {
		gauge("devfsd_live_requests", "FUSE requests being served.", nil, func() float64 { return float64(f().LiveReqs) })
		const help = "Kernel cache notifies: sent (accepted or nothing to invalidate), failed (refused), dropped (queue full)."
		counter("devfsd_kernel_notify_total", help, prometheus.Labels{"result": "sent"}, func() float64 { return float64(f().Notify.Sent) })
		counter("devfsd_kernel_notify_total", help, prometheus.Labels{"result": "failed"}, func() float64 { return float64(f().Notify.Failed) })
		counter("devfsd_kernel_notify_total", help, prometheus.Labels{"result": "dropped"}, func() float64 { return float64(f().Notify.Dropped) })
	}
	if ns := src.Namespace; ns != nil {
		counter("devfsd_events_emitted_total", "Events the namespace queued (every change, lookup miss and expiry).", nil,
			func() float64 { return float64(ns.LastSeq()) })
		for t := dcache.TypeDir; t <= dcache.TypeRegular; t++ {
			gauge("devfsd_nodes", "Linked nodes by type.", prometheus.Labels{"type": t.String()},
				func() float64 { return float64(ns.NodesByType()[t]) })
		}
	}
	if f := src.Hub; f != nil {
		counter("devfsd_events_delivered_total", "Events handed to event-stream consumers.", nil, func() float64 { return float64(f().Delivered) })
		counter("devfsd_events_overrun_total", "Events consumers missed because their buffer was full (each reported as an overrun record).", nil,
			func() float64 { return float64(f().Missed) })
		gauge("devfsd_event_subscribers", "Event-stream consumers.", nil, func() float64 { return float64(f().Subscribers) })
	}
	if f := src.State; f != nil {
		counter("devfsd_state_commits_total", "Journal records written, one fsync each (group commits).", nil, func() float64 { return float64(f().Commits) })
		counter("devfsd_state_commit_seconds_total", "Time spent writing and fsyncing journal records.", nil,
			func() float64 { return f().SyncTotal.Seconds() })
		gauge("devfsd_state_entries", "Paths whose nodes or attributes are kept across restarts.", nil, func() float64 { return float64(f().Entries) })
	}
	if f := src.Suppressed; f != nil {
		counter("devfsd_audit_suppressed_total", "Audit lines held back by the per-name rate limit.", nil, func() float64 { return float64(f()) })
	}
	if f := src.Kernel; f != nil {
		reg.MustRegister(kernelCollector{f})
	}
	return m
}

// ObserveOp implements fs.OpObserver.
func (m *Metrics) ObserveOp(op fs.Op, d time.Duration) {
	if op < fs.NumOps {
		m.ops.observe(op, d)
	}
}

var _ fs.OpObserver = (*Metrics)(nil)

// ObserveLoad counts a finished load (lookup's Observe hook).
func (m *Metrics) ObserveLoad(mi lookup.MissInfo) {
	loader := mi.Loader
	if loader == "" {
		loader = "unknown"
	}
	c := m.loadChild(loadKey{loader, mi.Result})
	c.count.Inc()
	c.dur.Observe(mi.Duration.Seconds())
}

// loadChild returns k's children: the last ones used, from the published
// map (no lock), or, the first time k is seen, resolved from the vecs and
// published in a copy.
func (m *Metrics) loadChild(k loadKey) *loadChild {
	if c := m.lastLoad.Load(); c.key == k {
		return c
	}
	c, ok := (*m.loadChildren.Load())[k]
	if !ok {
		c = m.addLoadChild(k)
	}
	m.lastLoad.Store(c)
	return c
}

// addLoadChild resolves k's children and publishes them in a copy of the
// map, unless another caller did first.
func (m *Metrics) addLoadChild(k loadKey) *loadChild {
	m.loadMu.Lock()
	defer m.loadMu.Unlock()
	old := *m.loadChildren.Load()
	if c, ok := old[k]; ok { // added since our look
		return c
	}
	c := &loadChild{
		key:   k,
		count: m.loads.WithLabelValues(k.loader, k.result),
		dur:   m.loadDur.WithLabelValues(k.loader),
	}
	next := maps.Clone(old)
	next[k] = c
	m.loadChildren.Store(&next)
	return c
}

// Reloaded counts a reload by result: "ok", "invalid" or "failed".
func (m *Metrics) Reloaded(result string) { m.reloads.WithLabelValues(result).Inc() }

// Handler serves g in the Prometheus text format.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}

var (
	descLookups = prometheus.NewDesc("devfsd_lookups_total",
		"Lookups by what the first look found: the name (hit), a cached miss (negative_hit), nothing (miss: a load was started or joined).",
		[]string{"result"}, nil)
	descLoadsStarted  = prometheus.NewDesc("devfsd_loads_started_total", "Loads started (at most the misses).", nil, nil)
	descLoadsFinished = prometheus.NewDesc("devfsd_loads_finished_total", "Loads finished (at most those started; by loader and result in devfsd_loads_total).", nil, nil)
	descInflight      = prometheus.NewDesc("devfsd_lookup_inflight_records", "In-flight lookup records published now.", nil, nil)
	descWaiters       = prometheus.NewDesc("devfsd_lookup_waiters", "Lookups and changes waiting on an in-flight record now.", nil, nil)
)

// lookupCollector reports one lookup.Stats snapshot per scrape.
type lookupCollector struct{ f func() lookup.Stats }

func (c lookupCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descLookups
	ch <- descLoadsStarted
	ch <- descLoadsFinished
	ch <- descInflight
	ch <- descWaiters
}

func (c lookupCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.f()
	ch <- prometheus.MustNewConstMetric(descLookups, prometheus.CounterValue, float64(st.Hits), "hit")
	ch <- prometheus.MustNewConstMetric(descLookups, prometheus.CounterValue, float64(st.NegativeHits), "negative_hit")
	ch <- prometheus.MustNewConstMetric(descLookups, prometheus.CounterValue, float64(st.Misses), "miss")
	ch <- prometheus.MustNewConstMetric(descLoadsStarted, prometheus.CounterValue, float64(st.Loads))
	ch <- prometheus.MustNewConstMetric(descLoadsFinished, prometheus.CounterValue, float64(st.Finished))
	ch <- prometheus.MustNewConstMetric(descInflight, prometheus.GaugeValue, float64(st.InFlight))
	ch <- prometheus.MustNewConstMetric(descWaiters, prometheus.GaugeValue, float64(st.Waiting))
}

var (
	descUevents = prometheus.NewDesc("devfsd_kernel_uevents_total",
		"Uevents from the kernel applied or found stale, by action.", []string{"action"}, nil)
	descUeventsIgnored = prometheus.NewDesc("devfsd_kernel_uevents_ignored_total",
		"Uevents ignored: forged (not sent by the kernel), malformed (refused, sysfs devices included), stale (superseded).",
		[]string{"reason"}, nil)
	descOverruns        = prometheus.NewDesc("devfsd_kernel_overruns_total", "Uevent receive buffer overruns (uevents lost, answered by a rescan).", nil, nil)
	descRescans         = prometheus.NewDesc("devfsd_kernel_rescans_total", "Rescans of sysfs after start: after an overrun, or asked for (trigger).", nil, nil)
	descAutoloads       = prometheus.NewDesc("devfsd_kernel_autoloads_total", "Runs of the modprobe program for a lookup miss.", nil, nil)
	descAutoloadsFailed = prometheus.NewDesc("devfsd_kernel_autoload_failures_total", "Runs of the modprobe program that failed (exit status, deadline, could not start).", nil, nil)
	descCollisions      = prometheus.NewDesc("devfsd_kernel_collisions_total", "Kernel devices whose name was taken by a node the kernel source had not registered.", nil, nil)
	descKernelDevices   = prometheus.NewDesc("devfsd_kernel_devices", "Kernel devices known now.", nil, nil)
	descKernelNodes     = prometheus.NewDesc("devfsd_kernel_registered", "Nodes registered for kernel devices now.", nil, nil)
)

// kernelCollector reports one kernel.Stats snapshot per scrape.
type kernelCollector struct{ f func() kernel.Stats }

func (c kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUevents, descUeventsIgnored, descOverruns, descRescans,
		descAutoloads, descAutoloadsFailed, descCollisions, descKernelDevices, descKernelNodes} {
		ch <- d
	}
}

func (c kernelCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.f()
	for action, n := range st.Received {
		ch <- prometheus.MustNewConstMetric(descUevents, prometheus.CounterValue, float64(n), action)
	}
	ch <- prometheus.MustNewConstMetric(descUeventsIgnored, prometheus.CounterValue, float64(st.Forged), "forged")
	ch <- prometheus.MustNewConstMetric(descUeventsIgnored, prometheus.CounterValue, float64(st.Malformed), "malformed")
	ch <- prometheus.MustNewConstMetric(descUeventsIgnored, prometheus.CounterValue, float64(st.Stale), "stale")
	ch <- prometheus.MustNewConstMetric(descOverruns, prometheus.CounterValue, float64(st.Overruns))
	ch <- prometheus.MustNewConstMetric(descRescans, prometheus.CounterValue, float64(st.Rescans))
	ch <- prometheus.MustNewConstMetric(descAutoloads, prometheus.CounterValue, float64(st.Autoloads))
	ch <- prometheus.MustNewConstMetric(descAutoloadsFailed, prometheus.CounterValue, float64(st.AutoloadFailures))
	ch <- prometheus.MustNewConstMetric(descCollisions, prometheus.CounterValue, float64(st.Collisions))
	ch <- prometheus.MustNewConstMetric(descKernelDevices, prometheus.GaugeValue, float64(st.Devices))
	ch <- prometheus.MustNewConstMetric(descKernelNodes, prometheus.GaugeValue, float64(st.Registered))
}
