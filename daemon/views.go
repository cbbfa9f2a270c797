package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/fs/viewpath"
)

// Views: one daemon serves several mounts of its namespace. The main
// mount always shows the whole namespace. Each --view FILE (config.View)
// adds one more mount at start; the control API (POST /v1/views/add,
// /v1/views/remove, GET /v1/views) manages them while the daemon runs.
// Every view is checked the same way whichever door it came through, and
// a view that fails mounts nothing and changes nothing. At start, a view
// that fails fails the start.

// specOfFile turns a view file's typed values into an viewpath.Spec.
func specOfFile(v config.View) viewpath.Spec {
	spec := viewpath.Spec{Allow: v.Allow, Deny: v.Deny}
	u32 := func(x uint32) *uint32 { return &x }
	for _, o := range v.Overrides {
		fo := viewpath.Override{Glob: o.Glob}
		if o.Mode != nil {
			fo.Mode = u32(uint32(*o.Mode))
		}
		if o.UID != nil {
			fo.Uid = u32(uint32(*o.UID))
		}
		if o.GID != nil {
			fo.Gid = u32(uint32(*o.GID))
		}
		spec.Overrides = append(spec.Overrides, fo)
	}
	return spec
}

// WireView is the view file v as the control API carries it (devfsd ctl
// view add FILE sends it).
func WireView(v config.View) wire.View {
	w := wire.View{Mountpoint: v.Mountpoint, Allow: v.Allow, Deny: v.Deny}
	i64 := func(x config.ID) *int64 { y := int64(x); return &y }
	for _, o := range v.Overrides {
		wo := wire.ViewOverride{Glob: o.Glob}
		if o.Mode != nil {
			wo.Mode = o.Mode.String()
		}
		if o.UID != nil {
			wo.Uid = i64(*o.UID)
		}
		if o.GID != nil {
			wo.Gid = i64(*o.GID)
		}
		w.Overrides = append(w.Overrides, wo)
	}
	return w
}

// viewManager is the daemon's control.Views: the view mounts beside the
// main one. Lock order: mu, then whatever fs takes (mu is held across a
// mount, so that adds and removes happen one at a time; ListViews waits
// for a mount in progress).
type viewManager struct {
	main     *fs.Server // the main mount's server, mounted before any view
	viewsDir string     // views mount only beneath it
	mux      *fs.NotifyMux
	specials fs.SpecialOpts // every view's pts and shm
	log      *zap.Logger
	keep     *keeping // set by New: each view is kept in the descriptor store

	mu     sync.Mutex
	views  map[string]*viewMount // guarded by mu; by mountpoint
	closed bool                  // guarded by mu: shutting down

	// handedOver is set once a successor serves the views (handover.go):
	// their serve loops end without an unmount.
	handedOver atomic.Bool
}

type viewMount struct {
	spec wire.View
	srv  *fs.Server
}

func newViewManager(main *fs.Server, mux *fs.NotifyMux, viewsDir string, specials fs.SpecialOpts, log *zap.Logger) *viewManager {
	return &viewManager{main: main, mux: mux, viewsDir: viewsDir, specials: specials, log: log, views: map[string]*viewMount{}}
}

var _ control.Views = (*viewManager)(nil)

// within reports whether p is q or beneath it.
func within(p, q string) bool {
	return p == q || strings.HasPrefix(p, strings.TrimSuffix(q, "/")+"/")
}

// checkMountpointLocked refuses a view mountpoint the operator did not
// allow: one that is not an absolute, clean path beneath views_dir with
// no symlink on the way, not an existing empty directory, or that has
// something live mounted on it (a dead FUSE mount there is cleared); one
// that is a mount of this daemon, inside one or above one — the daemon
// never touches its own mounts, and a view above one would hide it.
// Preconditions: m.mu held.
func (m *viewManager) checkMountpointLocked(mp string) error {
	bad := func(format string, a ...any) error {
		return control.NewError(http.StatusBadRequest, wire.CodeInvalidMountpoint, "mountpoint", format, a...)
	}
	if err := config.CheckMountpointPath(mp); err != nil {
		return bad("%v", err)
	}
	mounts := []string{m.main.Mountpoint()}
	for p := range m.views {
		mounts = append(mounts, p)
	}
	for _, p := range mounts {
		switch {
		case p == mp:
			return control.NewError(http.StatusConflict, wire.CodeExists, "mountpoint", "%s is a mount of this daemon already", mp)
		case within(mp, p):
			return bad("%s is inside %s, a mount of this daemon", mp, p)
		case within(p, mp):
			return bad("%s is above %s, a mount of this daemon: a view there would hide it", mp, p)
		}
	}
	if mp == m.viewsDir || !within(mp, m.viewsDir) {
		return bad("%s is not beneath %s, where views may be mounted (views_dir, --views-dir)", mp, m.viewsDir)
	}
	if err := clearMountpoint(mp, false, m.log); err != nil {
		return bad("%v", err)
	}
	fi, err := os.Lstat(mp)
	if err != nil {
		return bad("%v", err)
	}
	if !fi.IsDir() {
		return bad("%s is not a directory (a symlink is not followed)", mp)
	}
	if real, err := filepath.EvalSymlinks(mp); err != nil || real != mp {
		return bad("%s is reached through a symlink (it is %s); give the path itself", mp, real)
	}
	ents, err := os.ReadDir(mp)
	if err != nil {
		return bad("%v", err)
	}
	if len(ents) > 0 {
		return bad("%s is not empty (%d entries): a view would hide them", mp, len(ents))
	}
	return nil
}

// compile compiles spec's patterns.
func compile(spec viewpath.Spec) (*viewpath.View, error) {
	view, err := viewpath.Compile(spec)
	if err != nil {
		var ve *viewpath.Error
		if errors.As(err, &ve) {
			return nil, control.NewError(http.StatusBadRequest, wire.CodeInvalidArgument, ve.Field, "%s", ve.Error())
		}
		return nil, err
	}
	return view, nil
}

// AddView mounts view, compiled from v by the control API
// (control.Views).
func (m *viewManager) AddView(ctx context.Context, v wire.View, view *viewpath.View) (wire.ViewInfo, error) {
	return m.add(v, view)
}

// add mounts view at v.Mountpoint; v is what ListViews shows of it.
func (m *viewManager) add(v wire.View, view *viewpath.View) (wire.ViewInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return wire.ViewInfo{}, control.NewError(http.StatusServiceUnavailable, wire.CodeShuttingDown, "", "the daemon is stopping")
	}
	if err := m.checkMountpointLocked(v.Mountpoint); err != nil {
		return wire.ViewInfo{}, err
	}
	log := m.log.With(zap.String("view", v.Mountpoint))
	srv, err := m.main.NewView(m.mux, view, log.Named("fs"))
	if err != nil {
		return wire.ViewInfo{}, control.NewError(http.StatusInsufficientStorage, wire.CodeNoSpace, "", "%v", err)
	}
	if err := srv.Mount(v.Mountpoint); err != nil {
		srv.Shutdown() // takes its queue out of the mux; nothing was mounted
		return wire.ViewInfo{}, control.NewError(http.StatusInternalServerError, wire.CodeMountFailed, "mountpoint", "%v", err)
	}
	// The view's own pts and shm; every Shutdown of it detaches them first.
	if _, err := srv.MountSpecials(m.specials); err != nil {
		srv.Shutdown()
		return wire.ViewInfo{}, control.NewError(http.StatusInternalServerError, wire.CodeMountFailed, "mountpoint", "%v", err)
	}
	vm := &viewMount{spec: v, srv: srv}
	m.views[v.Mountpoint] = vm
	go m.watch(vm)
	m.keep.added(v.Mountpoint, &v, srv)
	log.Info("view mounted", zap.Strings("allow", v.Allow), zap.Strings("deny", v.Deny),
		zap.Int("overrides", len(v.Overrides)))
	return infoOf(vm.spec, srv, false), nil
}

// watch drops a view whose mount was taken away from outside (umount,
// fusermount3 -u): its server is shut down and the view is gone.
func (m *viewManager) watch(vm *viewMount) {
	<-vm.srv.Served()
	if m.handedOver.Load() {
		return
	}
	m.mu.Lock()
	mine := m.views[vm.spec.Mountpoint] == vm
	if mine {
		delete(m.views, vm.spec.Mountpoint)
	}
	m.mu.Unlock()
	if mine {
		m.log.Warn("a view's mount is gone (unmounted from outside); the view is removed",
			zap.String("view", vm.spec.Mountpoint))
		m.keep.dropped(vm.spec.Mountpoint)
		vm.srv.Shutdown()
	}
}

// RemoveView unmounts the view at mountpoint (control.Views): its live
// requests are drained for at most the shutdown timeout, then it is
// unmounted (lazily if busy).
func (m *viewManager) RemoveView(ctx context.Context, mountpoint string) error {
	m.mu.Lock()
	vm, ok := m.views[mountpoint]
	if ok {
		delete(m.views, mountpoint)
	}
	isMain := mountpoint == m.main.Mountpoint()
	m.mu.Unlock()
	switch {
	case isMain:
		return control.NewError(http.StatusConflict, wire.CodeBusy, "mountpoint",
			"%s is the main mount, not a view; stop the daemon to unmount it", mountpoint)
	case !ok:
		return control.NewError(http.StatusNotFound, wire.CodeNotFound, "mountpoint", "no view is mounted at %s", mountpoint)
	}
	m.keep.dropped(mountpoint) // before it ends: a successor must not get it
	err := vm.srv.Shutdown()
	m.log.Info("view removed", zap.String("view", mountpoint), zap.Error(err))
	if err != nil {
		return control.NewError(http.StatusInternalServerError, wire.CodeInternal, "mountpoint", "the view is gone, but: %v", err)
	}
	return nil
}

// ListViews lists the main mount, then the views by mountpoint
// (control.Views).
func (m *viewManager) ListViews() []wire.ViewInfo {
	m.mu.Lock()
	vms := make([]*viewMount, 0, len(m.views))
	for _, vm := range m.views {
		vms = append(vms, vm)
	}
	m.mu.Unlock()
	sort.Slice(vms, func(i, j int) bool { return vms[i].spec.Mountpoint < vms[j].spec.Mountpoint })
	out := []wire.ViewInfo{infoOf(wire.View{Mountpoint: m.main.Mountpoint()}, m.main, true)}
	for _, vm := range vms {
		out = append(out, infoOf(vm.spec, vm.srv, false))
	}
	return out
}

func infoOf(v wire.View, srv *fs.Server, main bool) wire.ViewInfo {
	st := srv.Stats()
	return wire.ViewInfo{View: v, Main: main, KnownNodes: st.KnownNodes, LiveRequests: st.LiveReqs,
		NotifySent: st.Notify.Sent, NotifyDropped: st.Notify.Dropped}
}

// start mounts the views of --view, in order, once the main mount is
// live; the first that fails is the error (the caller takes everything
// down).
// A view kept in the descriptor store (keep.go) is served again instead:
// as its --view file says now, or, if it was added through the control
// API, as it was added.
func (m *viewManager) start(views []viewFile) error {
	for _, f := range views {
		if km := m.keep.views[f.shown.Mountpoint]; km != nil {
			delete(m.keep.views, f.shown.Mountpoint)
			if err := m.resumeKept(f.shown, km); err != nil {
				return fmt.Errorf("--view %s: %w", f.file, err)
			}
			continue
		}
		if _, err := m.add(f.shown, f.view); err != nil {
			return fmt.Errorf("--view %s: %w", f.file, err)
		}
	}
	for mp, km := range m.keep.views {
		delete(m.keep.views, mp)
		if err := m.resumeKept(*km.view, km); err != nil {
			return fmt.Errorf("the kept view %s: %w", mp, err)
		}
	}
	return nil
}

// resumeKept serves a kept view again (its mount and specials are still
// there) and has the kernel resend what the killed daemon left
// unanswered on it; one it cannot serve is taken out of the store.
func (m *viewManager) resumeKept(v wire.View, km *keptMount) error {
	files := km.files
	km.files = nil
	if err := m.resume(v, km.server, files); err != nil {
		m.keep.forget(km)
		return err
	}
	m.keep.resumed(km) // Resume asked the kernel to resend before it read
	m.log.Info("view served again", zap.String("view", v.Mountpoint))
	return nil
}

// close takes every view down, concurrently, each bounded by the
// shutdown timeout; views cannot be added afterwards. Idempotent.
func (m *viewManager) close() {
	m.mu.Lock()
	m.closed = true
	vms := m.views
	m.views = map[string]*viewMount{}
	m.mu.Unlock()
	var wg sync.WaitGroup
	for mp, vm := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := vm.srv.Shutdown(); err != nil {
				m.log.Warn("a view did not unmount cleanly", zap.String("view", mp), zap.Error(err))
			}
		}()
	}
	wg.Wait()
}

// viewFile is a --view file, read and compiled.
type viewFile struct {
	file  string
	shown wire.View // what ListViews shows
	view  *viewpath.View
}

// loadViewFiles reads and compiles every --view file, before anything is
// mounted.
func loadViewFiles(files []string) ([]viewFile, error) {
	var out []viewFile
	for _, f := range files {
		v, err := config.ReadView(f)
		if err == nil {
			err = config.CheckMountpointPath(v.Mountpoint)
		}
		var view *viewpath.View
		if err == nil {
			view, err = compile(specOfFile(v))
		}
		if err != nil {
			return nil, config.Error{Err: fmt.Errorf("--view %s: %w", f, err)}
		}
		out = append(out, viewFile{file: f, shown: WireView(v), view: view})
	}
	return out, nil
}
