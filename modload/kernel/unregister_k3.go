//go:build !mutant_k3

package kernel

// unregisterIf removes the node at path if its inode number is id, in one
// dcache step: a node a user made at the name after the source learnt id
// is never removed.
func unregisterIf(d DcacheNamespace, path string, id uint64) error {
	return d.NS.UnregisterIf(path, id, d.Caller)
}
