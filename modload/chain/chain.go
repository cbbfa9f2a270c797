// Package chain joins the helper loader and a fallback: while a helper is
// attached every load goes to it (and only to it); while none is, to the
// fallback (the built-in catalogue by default, or nothing).
//
// A load that was pending when the helper went away (helper.ErrGone: it
// disconnected or died before answering) goes to the fallback at once,
// within what is left of the same deadline: the helper never said the name
// is missing, so its death is no miss. The lookup then answers from what
// the fallback did — the node if it provides the name, a miss (cached
// negatively as any) if it does not. Without a fallback such a load is
// ENOENT, as a miss with no helper attached is.
package chain

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/helper"
)

// Loader is the chain. Fallback may be nil: misses with no helper attached
// are then ENOENT.
type Loader struct {
	Helper   *helper.Loader
	Fallback modload.Loader
	// FallbackName names the fallback for LoaderName ("builtin", "exec",
	// "none"); empty: "fallback".
	FallbackName string
}

// LoaderName names the loader a load starting now would ask: "helper" while a
// helper is attached, else the fallback's name ("none" without one). For
// metrics and the audit log; a helper may attach or go in between.
func (c Loader) LoaderName() string {
	if c.helperAttached() {
		return "helper"
	}
	switch {
	case c.Fallback == nil:
		return "none"
	case c.FallbackName == "":
		return "fallback"
	}
	return c.FallbackName
}

var _ modload.Loader = Loader{}

// helperAttached reports whether a helper is attached now.
func (c Loader) helperAttached() bool {
	if c.Helper == nil {
		return false
	}
	_, ok := c.Helper.Attached()
	return ok
}

// Declines implements modload.Decliner: while no helper is attached, the
// fallback's answer (no fallback at all declines every name); while one
// is, never — the helper must be asked. A helper that attaches just
// after a name was declined sees the next miss; the declined one is
// answered as the fallback would have answered it a moment earlier.
func (c Loader) Declines(dir, name string) bool {
	if c.helperAttached() {
		return false
	}
	if c.Fallback == nil {
		return true
	}
	d, ok := c.Fallback.(modload.Decliner)
	return ok && d.Declines(dir, name)
}

var _ modload.Decliner = Loader{}

// Load implements modload.Loader: the helper while one is attached, the
// fallback while none is or when the helper went away before answering.
func (c Loader) Load(ctx context.Context, dir, name string, caller dcache.Caller) error {
	if c.Helper != nil {
		err := c.Helper.Load(ctx, dir, name, caller)
		if !errors.Is(err, helper.ErrNotAttached) && !errors.Is(err, helper.ErrGone) {
			return err
		}
	}
	if c.Fallback == nil {
		return fmt.Errorf("chain: no helper attached and no fallback loader: %w", syscall.ENOENT)
	}
	return c.Fallback.Load(ctx, dir, name, caller)
}
