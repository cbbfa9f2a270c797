package helperd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/modload/devfsdconf"
)

// The one-request answer
//
// While the rules for a LOOKUP run, the registrations they make inside
// the mount (MODLOAD from the built-in catalogue, compatibility names and
// other symlinks, COPY's nodes) are not sent one request each: they are
// kept in a batch and sent with the done, in one POST /v1/helper/done
// that the daemon applies before it releases the lookup (docs/api.md).
// The rules still see them as made:
//
//   - Lstat, Chmod, Chown and Remove of a batched path act on the batch:
//     a PERMISSIONS rule for a node MODLOAD registered changes the mode
//     and owner the node is registered with, so it never exists with the
//     catalogue's;
//   - anything the batch cannot answer flushes it first (registers each
//     entry with POST /v1/register, as before): ReadDir, a path above a
//     batched one, EXECUTE (a program may look at the mount or run
//     `devfsd ctl`), --modprobe, a MODLOAD whose nodes an EXECUTE
//     REGISTER rule matches (so that the rule runs only for the nodes that
//     were made, as when each registration was a request of its own).
//
// A batched registration of a name that turns out to be taken is skipped
// (exist_ok), as a taken name is success to a loader. The rules for it
// have then run against the batch only (their changes to it are dropped
// with it), except for what they make under other names: a
// compatibility link of a node that existed is made if it is missing.

// batch is the registrations kept for one LOOKUP's done. Used from the
// one goroutine that runs the rules.
type batch struct {
	regs  []wire.RegisterRequest
	index map[string]int // path -> index in regs
	// under counts, for each directory a batched path is in (each of its
	// parents up to the root, ""), the batched paths in it: above's
	// answer without a look at every path.
	under map[string]int
	errs  []error // flush failures, for the done's error message
}

func newBatch() *batch { return &batch{index: map[string]int{}, under: map[string]int{}} }

func (b *batch) add(req wire.RegisterRequest) {
	b.index[req.Path] = len(b.regs)
	b.regs = append(b.regs, req)
	forParents(req.Path, func(d string) { b.under[d]++ })
}

// get returns the batched registration of p, if any.
func (b *batch) get(p string) (*wire.RegisterRequest, bool) {
	i, ok := b.index[p]
	if !ok {
		return nil, false
	}
	return &b.regs[i], true
}

func (b *batch) remove(p string) {
	i, ok := b.index[p]
	if !ok {
		return
	}
	b.regs = append(b.regs[:i], b.regs[i+1:]...)
	delete(b.index, p)
	for j := i; j < len(b.regs); j++ {
		b.index[b.regs[j].Path] = j
	}
	forParents(p, func(d string) {
		if b.under[d]--; b.under[d] == 0 {
			delete(b.under, d)
		}
	})
}

// take returns the batched registrations and empties the batch (its
// errors stay).
func (b *batch) take() []wire.RegisterRequest {
	regs := b.regs
	b.regs, b.index, b.under = nil, map[string]int{}, map[string]int{}
	return regs
}

// above reports whether p is a directory some batched path is under.
func (b *batch) above(p string) bool { return b.under[p] > 0 }

// forParents calls f with each directory p is in, innermost first, the
// root ("") last.
func forParents(p string, f func(dir string)) {
	for i := strings.LastIndexByte(p, '/'); i >= 0; i = strings.LastIndexByte(p[:i], '/') {
		f(p[:i])
	}
	f("")
}

// nodeOf is the node req registers, as the daemon would answer it.
func nodeOf(req wire.RegisterRequest) wire.Node {
	n := wire.Node{Path: req.Path, Type: req.Type, Mode: req.Mode}
	if n.Mode == "" {
		n.Mode = defaultMode(req.Type)
	}
	if req.Uid != nil {
		n.Uid = uint32(*req.Uid)
	}
	if req.Gid != nil {
		n.Gid = uint32(*req.Gid)
	}
	if req.Major != nil {
		n.Major, n.Minor = uint32(*req.Major), uint32(*req.Minor)
	}
	if req.Target != nil {
		n.Target = *req.Target
	}
	return n
}

// defaultMode is the daemon's mode for a registration without one.
func defaultMode(typ string) string {
	switch typ {
	case "char", "block":
		return "0600"
	case "dir":
		return "0755"
	case "symlink":
		return "0777"
	}
	return "0644"
}

// startBatch begins keeping registrations for one LOOKUP's done.
func (h *helperHost) startBatch() { h.batch = newBatch() }

// endBatch stops keeping registrations and returns what was kept.
func (h *helperHost) endBatch() *batch {
	b := h.batch
	h.batch = nil
	return b
}

// flush registers what the batch holds, one request each, and empties
// it; a taken name is no failure. Failures are kept for the done. It
// returns the paths it registered.
func (h *helperHost) flush(ctx context.Context) map[string]bool {
	b := h.batch
	if b == nil || len(b.regs) == 0 {
		return nil
	}
	regs := b.take()
	made := make(map[string]bool, len(regs))
	for _, req := range regs {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		_, err := h.c.Register(cctx, req)
		cancel()
		switch {
		case err == nil:
			made[req.Path] = true
		case client.Code(err) != wire.CodeExists:
			h.log.Warn("register failed", zap.String("path", req.Path), zap.Error(err))
			b.errs = append(b.errs, fmt.Errorf("register %s: %w", req.Path, err))
		}
	}
	return made
}

// flushCreated flushes the batch and returns the events of evs whose
// node it registered.
func (h *helperHost) flushCreated(ctx context.Context, evs []devfsdconf.Event) []devfsdconf.Event {
	made := h.flush(ctx)
	var out []devfsdconf.Event
	for _, ev := range evs {
		if made[ev.Name] {
			out = append(out, ev)
		}
	}
	return out
}

// flushFor flushes the batch if p is above a batched path (a directory
// the daemon would make for it).
func (h *helperHost) flushFor(p string) {
	if h.batch != nil && h.batch.above(p) {
		h.flush(h.ctx)
	}
}

// answer sends LOOKUP id's done with what b holds, in one request. If
// the daemon refuses the registrations (the lookup is then still
// pending), they are made one request each and a plain done follows, so
// that what can be registered is, as in the two-request form.
func (h *helperd) answer(ctx context.Context, hs *client.HelperStream, id uint64, b *batch, loadErr error) error {
	errs := []error{loadErr}
	if b != nil {
		errs = append(errs, b.errs...)
	}
	msg := func() string {
		if err := errors.Join(errs...); err != nil {
			return err.Error()
		}
		return ""
	}
	dctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	req := wire.DoneRequest{ID: id, Error: msg()}
	if b == nil || len(b.regs) == 0 {
		return hs.Done(dctx, id, req.Error)
	}
	req.Register, req.ExistOK = b.regs, true
	ans, err := hs.Answer(dctx, req)
	if err == nil {
		if ans.Late {
			h.log.Info("lookup answered late: its registrations were made after its wait ended", zap.Uint64("id", id))
		}
		return nil
	}
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status >= 500 || ce.Code == wire.CodeUnknownLookup || ce.Code == wire.CodeNotHelper {
		return err
	}
	h.log.Warn("the daemon refused the lookup's registrations as one request; making them one by one",
		zap.Uint64("id", id), zap.Error(err))
	h.host.batch = b
	h.host.flush(ctx)
	h.host.batch = nil
	errs = append(errs[:1], b.errs...)
	dctx2, cancel2 := context.WithTimeout(ctx, callTimeout)
	defer cancel2()
	return hs.Done(dctx2, id, msg())
}

// makeRequest is the registration of the node Make makes at p.
func makeRequest(p string, st devfsdconf.Stat, perm uint32) (wire.RegisterRequest, error) {
	req := wire.RegisterRequest{Path: p, Mode: config.Mode(perm & 07777).String()}
	uid, gid := int64(st.UID), int64(st.GID)
	req.Uid, req.Gid = &uid, &gid
	switch st.Mode & devfsdconf.TypeMask {
	case devfsdconf.TypeChar, devfsdconf.TypeBlock:
		req.Type = "char"
		if st.Mode&devfsdconf.TypeMask == devfsdconf.TypeBlock {
			req.Type = "block"
		}
		ma, mi := int64(st.Major), int64(st.Minor)
		req.Major, req.Minor = &ma, &mi
	case devfsdconf.TypeDir:
		req.Type = "dir"
	case devfsdconf.TypeLink:
		req.Type = "symlink"
		t := st.Target
		req.Target = &t
		req.Mode = ""
	case devfsdconf.TypeFifo:
		req.Type = "fifo"
	case devfsdconf.TypeSock:
		req.Type = "socket"
	default:
		return req, &fs.PathError{Op: "make", Path: p, Err: errors.New("regular files cannot be registered; skipped")}
	}
	return req, nil
}
