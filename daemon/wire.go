package daemon

import (
	"fmt"
	"syscall"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// nsRegistrar adapts the namespace to modload.Registrar, the door through
// which the built-in loader registers devices (modload may not import
// dcache; the daemon joins them). Registrations are attributed to the daemon
// itself, dcache.OriginBuiltin.
type nsRegistrar struct {
	ns *dcache.Namespace
}

var _ modload.Registrar = nsRegistrar{}

// Register registers n in the namespace; dcache's errors (EEXIST for a
// taken name, ENOTDIR, ENOSPC) pass through wrapped.
func (r nsRegistrar) Register(n modload.Node) error {
	if err := n.Validate(); err != nil {
		return fmt.Errorf("%w: %w", err, syscall.EINVAL)
	}
	_, err := r.ns.Register(n.Path, dcache.Spec{
		Type:   n.Type,
		Mode:   n.Perm,
		Uid:    n.UID,
		Gid:    n.GID,
		Major:  n.Major,
		Minor:  n.Minor,
		Target: n.Target,
	}, dcache.Caller{Origin: dcache.OriginBuiltin})
	return err
}
