//go:build !mutant_absent

package fs

import "github.com/devfsd/devfsd/dcache"

// recheckAbsent is Lookup's last look before it answers name absent
// (absent.go): the child registered since the loader's answer, or nil.
func recheckAbsent(dir *dcache.Node, name string) *dcache.Node { return childNow(dir, name) }
