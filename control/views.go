package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/fs/viewpath"
)

// Views manages the daemon's views (issue 8): more mounts of the same
// namespace, each showing what its patterns admit. The daemon implements
// it (cmd/devfsd); nil in Options: the view endpoints answer
// not_supported.
//
// AddView gets a view decoded and validated here, once: v as the request
// gave it (mountpoint absolute and clean, modes normalized to four octal
// digits), for ListViews to show, and view, its patterns and overrides
// compiled by package viewpath. It checks the mountpoint on disk,
// mounts, and answers once the mount is live. RemoveView drains the
// view's requests (bounded) and unmounts it. A failed AddView or
// RemoveView changes nothing. Errors made with NewError keep their code
// and status; any other is internal.
type Views interface {
	AddView(ctx context.Context, v wire.View, view *viewpath.View) (wire.ViewInfo, error)
	RemoveView(ctx context.Context, mountpoint string) error
	ListViews() []wire.ViewInfo
}

// NewError is an error answer with an HTTP status, a stable code (package
// wire) and the offending field, for the implementations of Views.
func NewError(status int, code, field, format string, a ...any) error {
	return errf(status, code, field, format, a...)
}

// viewsRoot: only root adds and removes views, whatever control_uid and
// control_gid say — a view mounts a file system wherever it is told.
func viewsRoot(c Cred) *apiError {
	if c.OK && c.Uid == 0 {
		return nil
	}
	return errf(http.StatusForbidden, wire.CodePermission, "",
		"uid %d may not add or remove views: they mount file systems (root only)", c.Uid)
}

func (s *Server) views() (Views, *apiError) {
	if s.opts.Views == nil {
		return nil, errf(http.StatusNotImplemented, wire.CodeNotSupported, "", "this daemon serves no views")
	}
	return s.opts.Views, nil
}

// viewChange is what adding and removing a view check first: the caller
// is root, the daemon serves views, the body can be read.
func (s *Server) viewChange(r *http.Request) (Views, []byte, *apiError) {
	if e := viewsRoot(credOf(r)); e != nil {
		return nil, nil, e
	}
	vs, e := s.views()
	if e != nil {
		return nil, nil, e
	}
	body, e := readBody(r)
	if e != nil {
		return nil, nil, e
	}
	return vs, body, nil
}

func viewError(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	return errf(http.StatusInternalServerError, wire.CodeInternal, "", "%v", err)
}

func (s *Server) handleViews(w http.ResponseWriter, r *http.Request) *apiError {
	if _, e := query(r); e != nil {
		return e
	}
	vs, e := s.views()
	if e != nil {
		return e
	}
	out := wire.Views{Views: vs.ListViews()}
	if out.Views == nil {
		out.Views = []wire.ViewInfo{}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) handleViewAdd(w http.ResponseWriter, r *http.Request) *apiError {
	vs, body, e := s.viewChange(r)
	if e != nil {
		return e
	}
	v, view, e := decodeView(body)
	if e != nil {
		return e
	}
	info, err := vs.AddView(r.Context(), v, view)
	if err != nil {
		return viewError(err)
	}
	writeJSON(w, http.StatusCreated, info)
	return nil
}

func (s *Server) handleViewRemove(w http.ResponseWriter, r *http.Request) *apiError {
	vs, body, e := s.viewChange(r)
	if e != nil {
		return e
	}
	o, e := decodeObject(body, "mountpoint")
	if e != nil {
		return e
	}
	mp, e := o.mountpoint()
	if e != nil {
		return e
	}
	if err := vs.RemoveView(r.Context(), mp); err != nil {
		return viewError(err)
	}
	writeJSON(w, http.StatusOK, wire.MountpointRequest{Mountpoint: mp})
	return nil
}

// mountpoint returns the required field "mountpoint": an absolute, clean
// path without NUL.
func (o object) mountpoint() (string, *apiError) {
	const k = "mountpoint"
	p, ok, e := o.name(k)
	if e != nil {
		return "", e
	}
	switch {
	case !ok:
		return "", bad(wire.CodeMissingField, k, "mountpoint is required")
	case len(p) > maxPath:
		return "", bad(wire.CodePathTooLong, k, "mountpoint is %d bytes, over %d", len(p), maxPath)
	case !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.IndexByte(p, 0) >= 0:
		return "", bad(wire.CodeInvalidMountpoint, k, "mountpoint %q is not an absolute, clean path", p)
	case p == "/":
		return "", bad(wire.CodeInvalidMountpoint, k, "mountpoint / is not allowed")
	}
	return p, nil
}

// strings returns field k as a list of names (absent: nil).
func (o object) strings(k string) ([]string, *apiError) {
	raw, ok := o[k]
	if !ok {
		return nil, nil
	}
	if len(raw) == 0 || raw[0] != '[' {
		return nil, bad(wire.CodeBadType, k, "%s must be a list of strings, not %s", k, jsonKind(raw))
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, bad(wire.CodeBadJSON, k, "%s: %v", k, err)
	}
	out := make([]string, 0, len(items))
	for i, it := range items {
		f := fmt.Sprintf("%s[%d]", k, i)
		s, _, e := object{f: it}.name(f)
		if e != nil {
			return nil, e
		}
		out = append(out, s)
	}
	return out, nil
}

// decodeView decodes a view (POST /v1/views/add) and compiles it: the
// view as given (modes normalized) and as compiled by viewpath.Compile,
// whose refusal of a pattern is invalid_argument naming the entry.
func decodeView(body []byte) (wire.View, *viewpath.View, *apiError) {
	var v wire.View
	o, e := decodeObject(body, "mountpoint", "allow", "deny", "overrides")
	if e != nil {
		return v, nil, e
	}
	if v.Mountpoint, e = o.mountpoint(); e != nil {
		return v, nil, e
	}
	if v.Allow, e = o.strings("allow"); e != nil {
		return v, nil, e
	}
	if v.Deny, e = o.strings("deny"); e != nil {
		return v, nil, e
	}
	spec := viewpath.Spec{Allow: v.Allow, Deny: v.Deny}
	if raw, ok := o["overrides"]; ok {
		if len(raw) == 0 || raw[0] != '[' {
			return v, nil, bad(wire.CodeBadType, "overrides", "overrides must be a list of objects, not %s", jsonKind(raw))
		}
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return v, nil, bad(wire.CodeBadJSON, "overrides", "overrides: %v", err)
		}
		for i, it := range items {
			f := fmt.Sprintf("overrides[%d]", i)
			ov, so, e := decodeOverride(f, it)
			if e != nil {
				e.body.Field = prefixField(f, e.body.Field)
				return v, nil, e
			}
			v.Overrides = append(v.Overrides, ov)
			spec.Overrides = append(spec.Overrides, so)
		}
	}
	view, err := viewpath.Compile(spec)
	if err != nil {
		var ve *viewpath.Error
		if errors.As(err, &ve) {
			return v, nil, bad(wire.CodeInvalidArgument, ve.Field, "%s", ve.Error())
		}
		return v, nil, bad(wire.CodeInvalidArgument, "", "%v", err)
	}
	return v, view, nil
}

// decodeOverride decodes overrides[i], named f in messages: as given
// (mode normalized) and as viewpath takes it. The field of an error it
// returns is relative to f (the caller prefixes it).
func decodeOverride(f string, it json.RawMessage) (wire.ViewOverride, viewpath.Override, *apiError) {
	var ov wire.ViewOverride
	var so viewpath.Override
	if len(it) == 0 || it[0] != '{' {
		return ov, so, bad(wire.CodeBadType, "", "%s must be an object {glob, mode, uid, gid}, not %s", f, jsonKind(it))
	}
	oo, e := decodeObject(it, "glob", "mode", "uid", "gid")
	if e != nil {
		return ov, so, e
	}
	glob, ok, e := oo.name("glob")
	if e != nil {
		return ov, so, e
	}
	if !ok {
		return ov, so, bad(wire.CodeMissingField, "glob", "glob is required")
	}
	ov.Glob, so.Glob = glob, glob
	if m, ok, e := oo.mode("mode"); e != nil {
		return ov, so, e
	} else if ok {
		ov.Mode = fmt.Sprintf("%04o", m)
		so.Mode = &m
	}
	for _, id := range []struct {
		k   string
		dst **int64
		so  **uint32
	}{{"uid", &ov.Uid, &so.Uid}, {"gid", &ov.Gid, &so.Gid}} {
		n, ok, e := oo.int(id.k, 0, maxOwnerID, wire.CodeInvalidOwner)
		if e != nil {
			return ov, so, e
		}
		if ok {
			u := uint32(n)
			*id.dst, *id.so = &n, &u
		}
	}
	if ov.Mode == "" && ov.Uid == nil && ov.Gid == nil {
		return ov, so, bad(wire.CodeMissingField, "", "%s sets none of mode, uid, gid", f)
	}
	return ov, so, nil
}

func prefixField(prefix, field string) string {
	if field == "" {
		return prefix
	}
	return prefix + "." + field
}
