package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.uber.org/zap"
	"gopkg.in/yaml.v3"

	"github.com/devfsd/devfsd/control"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/fs"
)

// Views (issue 8): one daemon serves several mounts of its namespace.
// DIR, the main mount, always shows the whole namespace. Each --view FILE
// (repeatable) adds one more mount at start, at the mountpoint the file
// names; `devfsd ctl view add|rm|ls` (POST /v1/views/add, /v1/views/remove,
// GET /v1/views) manage them while the daemon runs. A view file is YAML,
// read strictly (an unknown or repeated key, or a bad value, is an error
// naming its line):
//
//	mountpoint: /srv/box1/dev    # absolute; an existing directory
//	allow: [null, zero, "snd/*"] # globs; none: everything
//	deny: [snd/seq]              # globs; deny wins
//	overrides:                   # the first whose glob matches applies
//	  - {glob: "snd/*", mode: "0660", gid: 29}
//
// Patterns and scalars are taken as written: `null` is the name null.
// Every view of the daemon is validated the same way, whichever door it
// came through, and a view that fails mounts nothing and changes nothing.
// At start, a view that fails fails the start.

// ViewFiles is the repeatable --view flag.
type ViewFiles []string

func (v *ViewFiles) String() string { return strings.Join(*v, ",") }

// Set implements flag.Value.
func (v *ViewFiles) Set(s string) error {
	if s == "" {
		return errors.New("--view needs a file")
	}
	*v = append(*v, s)
	return nil
}

// ReadViewFile reads a view file.
func ReadViewFile(path string) (wire.View, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return wire.View{}, fmt.Errorf("view: %w", err)
	}
	v, err := parseViewYAML(data)
	if err != nil {
		return wire.View{}, fmt.Errorf("view %s: %w", path, err)
	}
	return v, nil
}

func parseViewYAML(data []byte) (wire.View, error) {
	var v wire.View
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return v, errors.New("empty: a view needs at least a mountpoint")
		}
		return v, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return v, fmt.Errorf("line %d: a second YAML document; a view is one mapping", extra.Line)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		root = root.Content[0]
	}
	m, err := yamlMap(root, "mountpoint", "allow", "deny", "overrides")
	if err != nil {
		return v, err
	}
	if n, ok := m["mountpoint"]; ok {
		if v.Mountpoint, err = yamlScalar(n, "mountpoint"); err != nil {
			return v, err
		}
	} else {
		return v, fmt.Errorf("line %d: mountpoint: missing", root.Line)
	}
	for _, l := range []struct {
		key string
		dst *[]string
	}{{"allow", &v.Allow}, {"deny", &v.Deny}} {
		n, ok := m[l.key]
		if !ok {
			continue
		}
		if n.Kind != yaml.SequenceNode {
			return v, fmt.Errorf("line %d: %s: want a list of patterns", n.Line, l.key)
		}
		for i, it := range n.Content {
			s, err := yamlScalar(it, fmt.Sprintf("%s[%d]", l.key, i))
			if err != nil {
				return v, err
			}
			*l.dst = append(*l.dst, s)
		}
	}
	if n, ok := m["overrides"]; ok {
		if n.Kind != yaml.SequenceNode {
			return v, fmt.Errorf("line %d: overrides: want a list of {glob, mode, uid, gid}", n.Line)
		}
		for i, it := range n.Content {
			f := fmt.Sprintf("overrides[%d]", i)
			om, err := yamlMap(it, "glob", "mode", "uid", "gid")
			if err != nil {
				return v, fmt.Errorf("%s: %w", f, err)
			}
			var o wire.ViewOverride
			g, ok := om["glob"]
			if !ok {
				return v, fmt.Errorf("line %d: %s.glob: missing", it.Line, f)
			}
			if o.Glob, err = yamlScalar(g, f+".glob"); err != nil {
				return v, err
			}
			if n, ok := om["mode"]; ok {
				if o.Mode, err = yamlScalar(n, f+".mode"); err != nil {
					return v, err
				}
			}
			for _, id := range []struct {
				k   string
				dst **int64
			}{{"uid", &o.Uid}, {"gid", &o.Gid}} {
				n, ok := om[id.k]
				if !ok {
					continue
				}
				s, err := yamlScalar(n, f+"."+id.k)
				if err != nil {
					return v, err
				}
				x, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return v, fmt.Errorf("line %d: %s.%s: %q is not a number", n.Line, f, id.k, s)
				}
				*id.dst = &x
			}
			v.Overrides = append(v.Overrides, o)
		}
	}
	return v, nil
}

// yamlMap returns n's keys, each once and known.
func yamlMap(n *yaml.Node, known ...string) (map[string]*yaml.Node, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("line %d: want a mapping of %s", n.Line, strings.Join(known, ", "))
	}
	m := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !contains(known, k.Value) {
			return nil, fmt.Errorf("line %d: unknown key %q (known keys: %s)", k.Line, k.Value, strings.Join(known, ", "))
		}
		if _, dup := m[k.Value]; dup {
			return nil, fmt.Errorf("line %d: %s: set twice", k.Line, k.Value)
		}
		m[k.Value] = n.Content[i+1]
	}
	return m, nil
}

// yamlScalar returns a scalar as written.
func yamlScalar(n *yaml.Node, what string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", fmt.Errorf("line %d: %s: want a single value, not a %s", n.Line, what, kindName(n.Kind))
	}
	return n.Value, nil
}

func contains(set []string, s string) bool {
	for _, x := range set {
		if x == s {
			return true
		}
	}
	return false
}

// viewSpecOf checks v's values (the control API has type-checked them
// already; a view file has not) and turns them into an fs.ViewSpec.
func viewSpecOf(v wire.View) (fs.ViewSpec, error) {
	spec := fs.ViewSpec{Allow: v.Allow, Deny: v.Deny}
	for i, o := range v.Overrides {
		f := fmt.Sprintf("overrides[%d]", i)
		fo := fs.ViewOverride{Glob: o.Glob}
		if o.Mode != "" {
			m, err := strconv.ParseUint(o.Mode, 8, 32)
			if err != nil || m > 07777 {
				return spec, control.NewError(http.StatusBadRequest, wire.CodeInvalidMode, f+".mode",
					"%s.mode %q is not an octal mode such as \"0660\"", f, o.Mode)
			}
			m32 := uint32(m)
			fo.Mode = &m32
		}
		for _, id := range []struct {
			k   string
			v   *int64
			dst **uint32
		}{{"uid", o.Uid, &fo.Uid}, {"gid", o.Gid, &fo.Gid}} {
			if id.v == nil {
				continue
			}
			if *id.v < 0 || *id.v > 1<<32-2 {
				return spec, control.NewError(http.StatusBadRequest, wire.CodeInvalidOwner, f+"."+id.k,
					"%s.%s %d is out of range [0, 4294967294]", f, id.k, *id.v)
			}
			x := uint32(*id.v)
			*id.dst = &x
		}
		spec.Overrides = append(spec.Overrides, fo)
	}
	return spec, nil
}

// viewManager is the daemon's control.Views: the view mounts beside the
// main one. Lock order: mu, then whatever fs takes (mu is held across a
// mount, so that adds and removes happen one at a time; ListViews waits
// for a mount in progress).
type viewManager struct {
	main *fs.Server // the main mount's server, mounted before any view
	mux  *fs.NotifyMux
	log  *zap.Logger

	mu     sync.Mutex
	views  map[string]*viewMount // guarded by mu; by mountpoint
	closed bool                  // guarded by mu: shutting down
}

type viewMount struct {
	spec wire.View
	srv  *fs.Server
}

func newViewManager(main *fs.Server, mux *fs.NotifyMux, log *zap.Logger) *viewManager {
	return &viewManager{main: main, mux: mux, log: log, views: map[string]*viewMount{}}
}

var _ control.Views = (*viewManager)(nil)

// within reports whether p is q or beneath it.
func within(p, q string) bool {
	return p == q || strings.HasPrefix(p, strings.TrimSuffix(q, "/")+"/")
}

// checkMountpointPath refuses a view mountpoint that is not an absolute,
// clean path other than /: what can be said of it without the file system.
func checkMountpointPath(mp string) error {
	if !filepath.IsAbs(mp) || filepath.Clean(mp) != mp || mp == "/" {
		return fmt.Errorf("mountpoint %q is not an absolute, clean path other than /", mp)
	}
	return nil
}

// checkMountpointLocked refuses a mountpoint that is not an absolute,
// clean, existing directory of its own (not a symlink), or that is a
// mount of this daemon, inside one, or above one — the daemon never
// touches its own mounts, and a view above one would hide it.
// Preconditions: m.mu held.
func (m *viewManager) checkMountpointLocked(mp string) error {
	bad := func(format string, a ...any) error {
		return control.NewError(http.StatusBadRequest, wire.CodeInvalidMountpoint, "mountpoint", format, a...)
	}
	if err := checkMountpointPath(mp); err != nil {
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
	fi, err := os.Lstat(mp)
	if err != nil {
		return bad("%v", err)
	}
	if !fi.IsDir() {
		return bad("%s is not a directory (a symlink is not followed)", mp)
	}
	return nil
}

// compileView checks v's values and patterns and compiles them.
func compileView(v wire.View) (*fs.View, error) {
	spec, err := viewSpecOf(v)
	if err != nil {
		return nil, err
	}
	view, err := fs.CompileView(spec)
	if err != nil {
		var ve *fs.ViewError
		if errors.As(err, &ve) {
			return nil, control.NewError(http.StatusBadRequest, wire.CodeInvalidArgument, ve.Field, "%s", ve.Error())
		}
		return nil, err
	}
	return view, nil
}

// checkView is what can be checked of a view before anything is
// mounted: its values, its patterns, an absolute clean mountpoint.
func checkView(v wire.View) error {
	if err := checkMountpointPath(v.Mountpoint); err != nil {
		return err
	}
	_, err := compileView(v)
	return err
}

// AddView mounts v (control.Views).
func (m *viewManager) AddView(ctx context.Context, v wire.View) (wire.ViewInfo, error) {
	view, err := compileView(v)
	if err != nil {
		return wire.ViewInfo{}, err
	}
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
	vm := &viewMount{spec: v, srv: srv}
	m.views[v.Mountpoint] = vm
	go m.watch(vm)
	log.Info("view mounted", zap.Strings("allow", v.Allow), zap.Strings("deny", v.Deny),
		zap.Int("overrides", len(v.Overrides)))
	return infoOf(vm.spec, srv, false), nil
}

// watch drops a view whose mount was taken away from outside (umount,
// fusermount3 -u): its server is shut down and the view is gone.
func (m *viewManager) watch(vm *viewMount) {
	<-vm.srv.Served()
	m.mu.Lock()
	mine := m.views[vm.spec.Mountpoint] == vm
	if mine {
		delete(m.views, vm.spec.Mountpoint)
	}
	m.mu.Unlock()
	if mine {
		m.log.Warn("a view's mount is gone (unmounted from outside); the view is removed",
			zap.String("view", vm.spec.Mountpoint))
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
func (m *viewManager) start(ctx context.Context, views []wire.View, files []string) error {
	for i, v := range views {
		if _, err := m.AddView(ctx, v); err != nil {
			return fmt.Errorf("--view %s: %w", files[i], err)
		}
	}
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

// loadViewFiles reads every --view file, before anything is mounted.
func loadViewFiles(files []string) ([]wire.View, error) {
	var out []wire.View
	for _, f := range files {
		v, err := ReadViewFile(f)
		if err == nil {
			err = checkView(v)
		}
		if err != nil {
			return nil, ConfigError{fmt.Errorf("--view %s: %w", f, err)}
		}
		out = append(out, v)
	}
	return out, nil
}
