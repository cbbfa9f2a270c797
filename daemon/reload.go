package daemon

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/metrics"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/builtin"
	"github.com/devfsd/devfsd/modload/chain"
	mexec "github.com/devfsd/devfsd/modload/exec"
	"github.com/devfsd/devfsd/modload/helper"
	"github.com/devfsd/devfsd/modload/kernel"
)

// Reload (SIGHUP, POST /v1/reload, devfsd ctl reload) re-reads the
// configuration as the daemon was started (the same --config file and
// flags), validates it whole, and applies what changed without
// unmounting. The keys it can change while running are reloadable below;
// a change to any other key (the mountpoint, the socket, mount options,
// limits, the state directory...) rejects the whole reload, as does an
// invalid file: the running configuration stays, and the error says why.
var reloadable = map[string]bool{
	"entry_timeout": true, "attr_timeout": true, "negative_timeout": true,
	"loader_timeout": true, "loader": true, "exec_program": true, "exec_timeout": true,
	"control_uid": true, "control_gid": true, "modules": true,
}

// notifySyncTimeout bounds a reload's wait for the kernel notifies of the
// names it invalidated, so that its caller's next lookup sees the change.
const notifySyncTimeout = 2 * time.Second

// loaders builds fallback loaders from a configuration and remembers every
// exec loader it made, so that the programs of one replaced by a reload
// still bypass the lookup wait while they finish.
type loaders struct {
	ns      *dcache.Namespace
	bl      *builtin.Loader
	ks      *kernel.Source // devices kernel; else nil
	devices string         // the device source chosen at start: kernel, catalogue, none
	log     *zap.Logger
	wrap    func(modload.Loader) modload.Loader // the test hooks' (testhooks.go); identity without them
	execs   atomic.Pointer[[]*mexec.Loader]     // every exec loader made
	makeMux sync.Mutex
}

// fallback returns cfg's fallback loader (nil for none). The built-in
// catalogue answers only with devices catalogue: with kernel, loader
// builtin is the kernel's module autoload, and exec's program is asked
// for the names the kernel has nothing for (kernel.Then); with none,
// builtin is nothing.
func (l *loaders) fallback(cfg config.Config) (modload.Loader, error) {
	var fb modload.Loader
	switch cfg.Loader {
	case "builtin":
		if l.devices == "catalogue" {
			fb = l.bl
		}
	case "exec":
		el, err := mexec.New(mexec.Options{Program: cfg.ExecProgram, Timeout: cfg.ExecTimeout,
			Mountpoint: cfg.Mountpoint, Socket: cfg.SocketPath(cfg.Mountpoint),
			Registrar: nsRegistrar{l.ns}, Logger: l.log})
		if err != nil {
			return nil, err
		}
		l.makeMux.Lock()
		var all []*mexec.Loader
		if p := l.execs.Load(); p != nil {
			all = append(all, *p...)
		}
		all = append(all, el)
		l.execs.Store(&all)
		l.makeMux.Unlock()
		fb = el
	}
	if l.ks != nil && cfg.Loader != "none" {
		fb = kernel.Then{Source: l.ks, Next: fb}
	}
	if fb != nil {
		fb = l.wrap(fb)
	}
	return fb, nil
}

// fallbackName names cfg's fallback for metrics, the audit log and the
// socket's stats: "kernel" where the kernel source answers misses.
func (l *loaders) fallbackName(cfg config.Config) string {
	switch {
	case l.ks != nil && cfg.Loader == "builtin":
		return "kernel"
	case l.ks != nil && cfg.Loader == "exec":
		return "kernel+exec"
	case l.devices == "none" && cfg.Loader == "builtin":
		return "none"
	}
	return cfg.Loader
}

// isExec reports whether pid is in the process group of a program an exec
// loader runs.
func (l *loaders) isExec(pid uint32) bool {
	if l.ks != nil && l.ks.IsLoader(pid) {
		return true // the kernel source's modprobe
	}
	p := l.execs.Load()
	if p == nil {
		return false
	}
	for _, el := range *p {
		if el.IsLoader(pid) {
			return true
		}
	}
	return false
}

// reloader applies a new configuration to the running daemon.
type reloader struct {
	reread  func() (config.Config, error) // nil: nothing to read again
	log     *zap.Logger
	ns      *dcache.Namespace
	res     *lookup.Resolver
	srv     *fs.Server
	ctl     *control.Server // nil without a socket
	hl      *helper.Loader
	loaders *loaders
	metrics *metrics.Metrics

	mu  sync.Mutex    // one reload at a time
	cfg config.Config // guarded by mu: the running configuration
}

// invalidConfig marks an error as a rejected configuration (nothing
// changed).
func invalidConfig(err error) error { return fmt.Errorf("%w: %w", control.ErrInvalidConfig, err) }

// reload re-reads the configuration and applies it. An invalid or
// unreloadable configuration changes nothing and is an error wrapping
// control.ErrInvalidConfig.
func (r *reloader) reload(ctx context.Context) (wire.Reload, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, err := r.reloadLocked(ctx)
	switch {
	case err == nil:
		r.metrics.Reloaded("ok")
		r.log.Info("configuration reloaded", zap.Strings("changed", res.Changed),
			zap.Int("invalidated", res.Invalidated), zap.Object("config", LoggedConfig(r.cfg)))
	case errors.Is(err, control.ErrInvalidConfig):
		r.metrics.Reloaded("invalid")
		r.log.Warn("reload refused; the running configuration stays", zap.Error(err))
	default:
		r.metrics.Reloaded("failed")
		r.log.Error("reload failed", zap.Error(err))
	}
	return res, err
}

func (r *reloader) reloadLocked(ctx context.Context) (wire.Reload, error) {
	var res wire.Reload
	if r.reread == nil {
		return res, invalidConfig(fmt.Errorf("this daemon was not started by devfsd mount; nothing to re-read"))
	}
	next, err := r.reread()
	if err != nil {
		return res, invalidConfig(err)
	}
	changed, err := DiffConfig(r.cfg, next)
	if err != nil {
		return res, invalidConfig(err)
	}
	res.Changed = changed
	if len(changed) == 0 {
		return res, nil
	}
	has := func(keys ...string) bool {
		for _, k := range keys {
			for _, c := range changed {
				if c == k {
					return true
				}
			}
		}
		return false
	}
	// Everything that can fail is built before anything changes.
	var fb modload.Loader
	newChain := has("loader", "exec_program", "exec_timeout")
	if newChain {
		if fb, err = r.loaders.fallback(next); err != nil {
			return res, invalidConfig(fmt.Errorf("loader: %w", err))
		}
	}
	// Apply. Requests in flight finish with what they started with.
	// The extension modules first: SetExtensions is the one step left
	// that can refuse (it checks what Validate checked), and it changes
	// nothing when it does.
	var provided []string // paths new or changed extensions provide
	if has("modules") {
		if provided, err = r.loaders.bl.SetExtensions(modules(next.Modules)); err != nil {
			return res, invalidConfig(fmt.Errorf("modules: %w", err))
		}
	}
	r.srv.SetTimeouts(next.EntryTimeout, next.AttrTimeout, next.NegativeTimeout)
	r.res.SetTimeout(next.LoaderTimeout)
	invalidate := false
	if has("negative_timeout") {
		res.Invalidated += r.ns.SetNegativeTTL(next.NegativeTimeout)
		invalidate = true
	}
	if newChain {
		r.res.SetLoader(chain.Loader{Helper: r.hl, Fallback: fb, FallbackName: r.loaders.fallbackName(next)})
		// A name the old loader could not provide may be one the new
		// one can: drop every cached miss, here and in the kernel. Names
		// that exist keep their answer and are left alone.
		res.Invalidated += r.ns.DropNegatives(time.Time{})
		invalidate = true
	} else if len(provided) > 0 && next.Loader == "builtin" {
		// Same loader, new extension modules: only the names they
		// provide (and the directories their nodes live in) change
		// answer. Their cached misses go, here and in the kernel;
		// every other name, and every name that exists, is left alone.
		res.Invalidated += r.ns.DropNegativesAt(provided)
		invalidate = true
	}
	if invalidate {
		// The notifies are queued; wait (bounded) until the kernel has
		// them, so that a lookup after the reload returned is answered
		// by the new configuration. Not under any lock but r.mu.
		sctx, cancel := context.WithTimeout(ctx, notifySyncTimeout)
		if err := r.srv.SyncNotifies(sctx); err != nil {
			r.log.Warn("reload: the kernel notifies were not all sent in time", zap.Error(err))
		}
		cancel()
	}
	if r.ctl != nil {
		r.ctl.SetFallback(r.loaders.fallbackName(next))
		if err := r.ctl.SetWriters(next.ControlUID, next.ControlGID); err != nil {
			r.log.Warn("reload: the socket's group could not be changed", zap.Error(err))
		}
	}
	r.cfg = next
	return res, nil
}

// DiffConfig returns the file keys whose values differ between old and
// next, sorted; an error naming every key that cannot change without a
// restart, if any did.
func DiffConfig(old, next config.Config) ([]string, error) {
	var changed, fixed []string
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(next)
	for i := 0; i < ov.NumField(); i++ {
		key := ov.Type().Field(i).Tag.Get("yaml")
		if key == "" || reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			continue
		}
		if reloadable[key] {
			changed = append(changed, key)
		} else {
			fixed = append(fixed, key)
		}
	}
	sort.Strings(changed)
	if len(fixed) > 0 {
		sort.Strings(fixed)
		return nil, fmt.Errorf("%v cannot change while running (restart the daemon); reloadable: %v", fixed, sortedReloadable())
	}
	return changed, nil
}

func sortedReloadable() []string {
	var keys []string
	for k := range reloadable {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
