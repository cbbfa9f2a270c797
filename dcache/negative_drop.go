package dcache

import "path"

// DropNegativesAt forgets the misses of the given paths (relative to the
// root, "widgets/first"), in the daemon and in the kernel, and returns how
// many the daemon had cached. It is DropNegatives narrowed to names whose
// answer is known to have changed (a loader that can now provide them):
// for each path whose parent directory exists and which has no child of
// that name, it drops the negative entry and queues an EXPIRE event, so
// fs tells the kernel to forget its negative dentry — even if the daemon
// had not cached the miss itself (a full negative table), which costs one
// notify the kernel answers ENOENT. A name that exists is left alone.
// Preconditions: no dcache mutex held.
func (ns *Namespace) DropNegativesAt(paths []string) int {
	dropped := 0
	for _, p := range paths {
		dir, name := path.Split(p)
		if CheckName(name) != nil {
			continue
		}
		d, err := ns.Resolve(dir)
		if err != nil || d.dir == nil {
			continue
		}
		d.dir.mu.Lock()
		if !d.dir.dead && d.dir.children[name] == nil {
			if _, ok := d.dir.negative[name]; ok {
				dropped++
			}
			d.expireLocked(name)
		}
		d.dir.mu.Unlock()
	}
	ns.events.flush()
	return dropped
}
