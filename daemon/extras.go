package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"

	"github.com/devfsd/devfsd/audit"
	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/metrics"
	"github.com/devfsd/devfsd/modload/chain"
	"github.com/devfsd/devfsd/modload/kernel"
	"github.com/devfsd/devfsd/state"
)

// extras are the parts of a daemon around the namespace and its mounts:
// the state store (--state-dir), the Prometheus registry (served on the
// socket's /metrics and on --metrics-addr) and the audit log. openExtras
// makes them before the namespace exists; close must come after every
// mount is down, so that no change arrives after the store is closed.
// Fields are set by openExtras (metrics by wire, msrv by serveMetrics)
// and read-only after Run has begun.
type extras struct {
	log   *zap.Logger
	store *state.Store // nil without --state-dir
	// ref is the store as the daemon's parts hold it (the namespace's
	// sink, the journals, the register hook): an upgrade closes the store
	// before the successor opens the directory, and opens it again if the
	// successor fails (handover.go). Nil without --state-dir.
	ref     *storeRef
	dir     string // the state directory
	reg     *prometheus.Registry
	metrics *metrics.Metrics // set by wire, before the mount
	handler http.Handler     // the registry's /metrics
	audit   *audit.Auditor
	mln     net.Listener // --metrics-addr; nil without
	msrv    *http.Server // serving mln, once serveMetrics ran
}

// openExtras opens the state directory (a damaged snapshot or a directory
// in use fails the start, before anything is mounted) and the metrics
// listener (an address in use fails the start too); auditFile, if not
// nil, is where the audit log's JSON lines go besides log. On an error,
// whatever it opened is closed again.
func openExtras(cfg config.Config, log, auditFile *zap.Logger, mln net.Listener) (*extras, error) {
	x := &extras{log: log, reg: prometheus.NewRegistry(), mln: mln}
	if err := x.open(cfg, auditFile); err != nil {
		x.close()
		return nil, err
	}
	return x, nil
}

func (x *extras) open(cfg config.Config, auditFile *zap.Logger) (err error) {
	if cfg.StateDir != "" {
		x.store, err = state.Open(cfg.StateDir, state.Options{Logger: x.log.Named("state")})
		if err != nil {
			return err
		}
		x.dir = cfg.StateDir
		x.ref = &storeRef{}
		x.ref.p.Store(x.store)
		x.log.Info("state directory opened", zap.String("dir", cfg.StateDir), zap.Int("kept", len(x.store.Entries())))
	}
	x.audit = audit.New(audit.Options{Log: x.log, File: auditFile})
	x.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	x.handler = metrics.Handler(x.reg)
	if cfg.MetricsAddr != "" && x.mln == nil { // else handed over by a predecessor
		x.mln, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics_addr: %w", err)
		}
	}
	return nil
}

// registerHook is dcache.Options.RegisterHook: kept attributes of
// registered devices.
func (x *extras) registerHook() func(string, dcache.Spec) dcache.Spec {
	if x.store == nil {
		return nil
	}
	return x.ref.RegisterHook
}

// restore recreates what users made, before the base set registers (a
// name a user took over stays theirs), and starts the committer.
func (x *extras) restore(ns *dcache.Namespace, imported bool) {
	if x.store == nil {
		return
	}
	if imported { // a predecessor's namespace holds what is kept already
		x.store.Start()
		x.log.Info("state directory taken over from the predecessor", zap.Int("kept", len(x.store.Entries())))
		return
	}
	n := x.store.Restore(ns)
	x.store.Start()
	x.log.Info("state restored", zap.Int("nodes", n), zap.Int("kept", len(x.store.Entries())))
}

// fsJournal is fs.Options.Journal.
func (x *extras) fsJournal() fs.Journal {
	if x.store == nil {
		return nil
	}
	return x.ref
}

// ctlJournal is control.Options.Journal.
func (x *extras) ctlJournal() interface {
	WaitDurable(context.Context, uint64) error
} {
	if x.store == nil {
		return nil
	}
	return x.ref
}

// observe is lookup's Observe hook: metrics and the audit log.
func (x *extras) observe(mi lookup.MissInfo) {
	if x.metrics != nil {
		x.metrics.ObserveLoad(mi)
	}
	x.audit.Miss(mi)
}

// wire registers the metrics over the daemon's parts.
func (x *extras) wire(ns *dcache.Namespace, res *lookup.Resolver, srv *fs.Server, hub *control.Hub, ks *kernel.Source) {
	src := metrics.Sources{Namespace: ns, Lookup: res.Stats, Server: srv.Stats, Suppressed: x.audit.Suppressed}
	if ks != nil {
		src.Kernel = ks.Stats
	}
	if hub != nil {
		src.Hub = hub.Stats
	}
	if x.store != nil {
		src.State = x.ref.Stats
	}
	x.metrics = metrics.New(x.reg, src)
}

// ObserveOp implements fs.OpObserver for the metrics wire makes (before
// the mount, so before any request).
func (x *extras) ObserveOp(op fs.Op, d time.Duration) {
	if m := x.metrics; m != nil {
		m.ObserveOp(op, d)
	}
}

// serveMetrics serves --metrics-addr, once the mount is live.
func (x *extras) serveMetrics() {
	if x.mln == nil {
		return
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", x.handler)
	x.msrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: zap.NewStdLog(x.log.Named("metrics"))}
	go func() {
		if err := x.msrv.Serve(x.mln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			x.log.Error("metrics listener stopped", zap.Error(err))
		}
	}()
	x.log.Info("metrics are served", zap.String("addr", x.mln.Addr().String()))
}

// close ends everything x has: the metrics listener, the audit log (its
// held counts are logged), the state store (what was queued is written).
// Called once the mount is down, so that no change arrives after.
func (x *extras) close() {
	if x.msrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if x.msrv.Shutdown(ctx) != nil {
			x.msrv.Close() // a scrape still running at the deadline: cut it
		}
		cancel()
	} else if x.mln != nil {
		x.mln.Close()
	}
	if x.audit != nil {
		x.audit.Close()
	}
	if x.store != nil {
		if err := x.store.Close(); err != nil {
			x.log.Warn("state: closing", zap.Error(err))
		}
	}
}

var (
	_ lookup.Namer    = chain.Loader{}
	_ lookup.Decliner = chain.Loader{}
)

// storeRef is extras.ref: the state store, or nil while an upgrade hands
// the directory over (events are then not kept: the mounts are stopped,
// and the successor's namespace is the export).
type storeRef struct {
	p atomic.Pointer[state.Store]
}

func (r *storeRef) WantsLookups() bool { return false }

func (r *storeRef) Event(ev dcache.Event) {
	if s := r.p.Load(); s != nil {
		s.Event(ev)
	}
}

func (r *storeRef) WaitDurable(ctx context.Context, seq uint64) error {
	if s := r.p.Load(); s != nil {
		return s.WaitDurable(ctx, seq)
	}
	return state.ErrClosed
}

func (r *storeRef) RegisterHook(path string, spec dcache.Spec) dcache.Spec {
	if s := r.p.Load(); s != nil {
		return s.RegisterHook(path, spec)
	}
	return spec
}

func (r *storeRef) Stats() state.Stats {
	if s := r.p.Load(); s != nil {
		return s.Stats()
	}
	return state.Stats{}
}

// releaseStore closes the store for a successor, which opens the
// directory (and its lock) itself.
func (x *extras) releaseStore() error {
	if x.store == nil {
		return nil
	}
	x.ref.p.Store(nil)
	err := x.store.Close()
	x.store = nil
	return err
}

// reopenStore opens the directory again after a handover failed (the
// successor is gone: the lock is free).
func (x *extras) reopenStore() error {
	if x.ref == nil || x.store != nil {
		return nil
	}
	s, err := state.Open(x.dir, state.Options{Logger: x.log.Named("state")})
	if err != nil {
		return err
	}
	s.Start()
	x.store = s
	x.ref.p.Store(s)
	return nil
}
