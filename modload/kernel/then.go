package kernel

import (
	"context"
	"fmt"
	"syscall"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// Then is the loader of a daemon whose devices are the kernel's: the
// Source first, and for a name it declines, Next (the exec loader, say;
// nil: nothing). The built-in catalogue is never Next: with the kernel's
// devices, no node the kernel lacks is invented.
type Then struct {
	Source *Source
	Next   modload.Loader
}

var (
	_ modload.Loader   = Then{}
	_ modload.Decliner = Then{}
)

// Load asks the Source unless it declines the name, else Next.
func (t Then) Load(ctx context.Context, dir, name string, c dcache.Caller) error {
	if !t.Source.Declines(dir, name) {
		return t.Source.Load(ctx, dir, name, c)
	}
	if t.Next == nil {
		return fmt.Errorf("kernel: no device and no module for %s: %w", name, syscall.ENOENT)
	}
	return t.Next.Load(ctx, dir, name, c)
}

// Declines implements modload.Decliner: both decline (Next by its own
// Declines; one that cannot say never declines).
func (t Then) Declines(dir, name string) bool {
	if !t.Source.Declines(dir, name) {
		return false
	}
	if t.Next == nil {
		return true
	}
	d, ok := t.Next.(modload.Decliner)
	return ok && d.Declines(dir, name)
}

// IsLoader reports whether pid is in the process group of the Source's
// modprobe or of Next's program (if Next can say).
func (t Then) IsLoader(pid uint32) bool {
	if t.Source.IsLoader(pid) {
		return true
	}
	l, ok := t.Next.(interface{ IsLoader(uint32) bool })
	return ok && l.IsLoader(pid)
}
