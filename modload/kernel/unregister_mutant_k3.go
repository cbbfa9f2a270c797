//go:build mutant_k3

package kernel

// unregisterIf, mutant K3: the inode number is compared in one dcache call
// and the name removed in another, so a node a user makes at the name in
// between is removed (TestHammerUnregisterKeepsTheUsersNode must fail).
func unregisterIf(d DcacheNamespace, path string, id uint64) error {
	if _, err := d.resolve(path, id); err != nil {
		return err
	}
	return d.NS.Unregister(path, d.Caller)
}
