package control

import (
	"errors"
	"net/http"
	"strings"
	"syscall"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
)

// POST /v1/helper/done: the helper's answer to LOOKUP id, alone or with
// the registrations that provide the name (the one-request form).
//
// The one-request form is checked whole before anything changes: the
// body (each registration exactly as POST /v1/register checks its body),
// the caller's right to write, the lookup being pending, and each
// registration against the namespace and the request itself — a name
// not taken (unless exist_ok), no parent that is not a directory, a
// directory listed before what goes in it, no path twice, room under
// max_nodes. Then the registrations are made in order, and only then is
// the lookup released, so its caller sees every one of them.
//
// What the check cannot exclude is another writer taking a name between
// the check and the registration. That registration then fails as a plain
// register would, the nodes the request had registered are unregistered
// again (their REGISTER and UNREGISTER events both go out; a parent
// directory a registration made stays, as it does after a plain register
// that fails below it), and the request is refused with the lookup still
// pending. With exist_ok a name taken meanwhile is skipped instead.
func (s *Server) handleDone(w http.ResponseWriter, r *http.Request) *apiError {
	if s.opts.Helper == nil {
		return errf(http.StatusNotImplemented, wire.CodeNotSupported, "", "this daemon takes no helper")
	}
	c := credOf(r)
	sess := s.opts.Helper.Current()
	if sess == nil || !s.fromHelper(c) {
		return errf(http.StatusForbidden, wire.CodeNotHelper, "", "pid %d is not the attached helper", c.Pid)
	}
	body, e := readBody(r)
	if e != nil {
		return e
	}
	d, e := decodeDone(body)
	if e != nil {
		return e
	}
	var loadErr error
	if d.Msg != "" {
		loadErr = errors.New(d.Msg)
	}
	ans := wire.DoneAnswer{ID: d.ID}
	var made []madeNode
	if len(d.Regs) > 0 {
		if !s.canWrite(c) {
			return errf(http.StatusForbidden, wire.CodePermission, "",
				"uid %d may not change the namespace (root or the configured control_uid/control_gid only)", c.Uid)
		}
		if !sess.Pending(d.ID) {
			return unknownLookup(d.ID)
		}
		skip, e := s.checkDone(d)
		if e != nil {
			return e
		}
		// c is the helper (checked above): its changes are the loader's.
		caller := c.Caller
		caller.Origin = dcache.OriginLoader
		if made, ans.Existing, e = s.applyDone(d, skip, caller); e != nil {
			return e
		}
		if e := s.durable(r.Context()); e != nil {
			return e
		}
	}
	if len(d.Regs) == 0 {
		if err := sess.Done(d.ID, loadErr); err != nil {
			return unknownLookup(d.ID)
		}
	} else if err := sess.DoneRegistering(d.ID, loadErr); err != nil {
		ans.Late = true
	}
	// The lookup is released: what is left is the helper's answer, the
	// nodes as they were registered.
	if len(made) > 0 {
		ans.Registered = make([]wire.Node, len(made))
		for i, m := range made {
			ans.Registered[i] = nodeOfAttr(m.path, m.n, m.attr)
		}
	}
	writeJSON(w, http.StatusOK, ans)
	return nil
}

// madeNode is a node a done registered, with its attributes then.
type madeNode struct {
	path string
	n    *dcache.Node
	attr dcache.Attr
}

func unknownLookup(id uint64) *apiError {
	return errf(http.StatusNotFound, wire.CodeUnknownLookup, "id",
		"lookup %d is not pending (answered, timed out, or another helper's)", id)
}

// checkDone checks d's registrations against the namespace and each
// other, changing nothing. skip[i] says registration i names a node that
// exists and d.ExistOK is set.
func (s *Server) checkDone(d done) (skip []bool, e *apiError) {
	ns := s.opts.Namespace
	skip = make([]bool, len(d.Regs))
	index := make(map[string]int, len(d.Regs))
	for i, reg := range d.Regs {
		if j, dup := index[reg.Path]; dup {
			return nil, inRegistration(i, bad(wire.CodeInvalidArgument, "path", "%q is registration %d too", reg.Path, j))
		}
		index[reg.Path] = i
	}
	var fresh uint64             // nodes the registrations would make
	missing := map[string]bool{} // parents Register would make, counted in fresh
	for i, reg := range d.Regs {
		// Each parent: one listed before this (and a directory), or one
		// that exists (and is a directory), or one Register will make.
		for p := reg.Path; ; {
			k := strings.LastIndexByte(p, '/')
			if k < 0 {
				break
			}
			p = p[:k]
			if j, ok := index[p]; ok && j < i {
				if d.Regs[j].Spec.Type != dcache.TypeDir {
					return nil, inRegistration(i, errf(http.StatusConflict, wire.CodeNotDir, "path",
						"its parent %q is registration %d, a %s", p, j, d.Regs[j].Spec.Type))
				}
				break // that registration's own check covers the rest
			} else if ok {
				return nil, inRegistration(i, bad(wire.CodeInvalidArgument, "path",
					"its parent %q is registration %d, later in the request; list a directory before what goes in it", p, j))
			}
			n, err := ns.Resolve(p)
			if err == nil {
				if !n.IsDir() {
					return nil, inRegistration(i, errf(http.StatusConflict, wire.CodeNotDir, "path", "%q is not a directory", p))
				}
				break
			}
			if !errors.Is(err, syscall.ENOENT) {
				return nil, inRegistration(i, errnoError(err))
			}
			if !missing[p] {
				missing[p] = true
				fresh++
			}
		}
		switch _, err := ns.Resolve(reg.Path); {
		case err == nil && d.ExistOK:
			skip[i] = true
		case err == nil:
			return nil, inRegistration(i, errf(http.StatusConflict, wire.CodeExists, "path", "%q exists", reg.Path))
		case errors.Is(err, syscall.ENOENT):
			fresh++
		default:
			return nil, inRegistration(i, errnoError(err))
		}
	}
	if st := ns.Statfs(); st.Nodes+fresh > st.MaxNodes {
		return nil, errf(http.StatusInsufficientStorage, wire.CodeNoSpace, "register",
			"the registrations make %d nodes; %d of max_nodes %d are left", fresh, st.MaxNodes-min(st.Nodes, st.MaxNodes), st.MaxNodes)
	}
	return skip, nil
}

// applyDone makes d's registrations, skipping those skip marks, and
// returns the nodes it made and the paths it skipped as existing; if one
// fails it unregisters those made (see handleDone) and returns the error.
func (s *Server) applyDone(d done, skip []bool, caller dcache.Caller) (made []madeNode, existing []string, e *apiError) {
	ns := s.opts.Namespace
	made = make([]madeNode, 0, len(d.Regs))
	for i, reg := range d.Regs {
		if skip[i] {
			existing = append(existing, reg.Path)
			continue
		}
		n, err := ns.Register(reg.Path, reg.Spec, caller)
		if err != nil && d.ExistOK && errors.Is(err, syscall.EEXIST) {
			existing = append(existing, reg.Path)
			continue
		}
		if err != nil {
			for k := len(made) - 1; k >= 0; k-- {
				p := made[k].path
				if cur, rerr := ns.Resolve(p); rerr == nil && cur == made[k].n {
					_ = ns.Unregister(p, caller)
				}
			}
			e := errnoError(err)
			e.body.Message += "; nothing registered, the lookup is still pending"
			return nil, nil, inRegistration(i, e)
		}
		made = append(made, madeNode{path: reg.Path, n: n, attr: n.Attr()})
	}
	return made, existing, nil
}
