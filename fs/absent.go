package fs

import "time"

// Absences the kernel may cache. A registration (REGISTER, from the
// control socket, a loader or the kernel device source) makes a name that
// did not exist, so the only thing about it the kernel can hold is a
// negative entry: this mount answered a LOOKUP of the name "absent" with
// a negative timeout (Server.Lookup), and the timeout has not passed, or
// removed the name (UNLINK, RMDIR, the source of a RENAME: the kernel
// may keep the dentry as a negative entry, at most until the entry
// timeout; Server.removing records those before the removal). A name
// the daemon removed itself was sent its DeleteNotify before, in queue
// order. So the queue records each such answer, and a registration
// queues its entry notice only if it finds one: otherwise the notice
// would be a write the kernel answers ENOENT, on the path of every
// registration, whose change must wait for its notices before it is
// answered.
//
// Order. Lookup records the answer (under nq.mu) and then looks at the
// directory once more (under its mu) before it answers; a registration
// links the name (under the directory's mu) and then looks for a record
// (Event, under nq.mu). Either the registration finds the record, and
// the notice drops the negative entry once the LOOKUP's reply is in (the
// kernel holds the directory while the LOOKUP runs), or Lookup's second
// look finds the name and answers it instead of "absent".
//
// Bounds. At most maxAbsent records; when they are full of live ones the
// queue forgets them and treats every name as possibly cached absent
// until the last answer's timeout has passed. A queue whose server took
// a mount over (resume.go) does the same for absentInheritedFor: the
// kernel may cache answers of the old process, whose timeouts it does
// not know.

// maxAbsent bounds the recorded answers of one mount.
const maxAbsent = 8192

// absentInheritedFor is the least time a mount taken over treats every
// name as possibly cached absent.
const absentInheritedFor = time.Minute

type absentKey struct {
	parent uint64 // the directory's inode number (its node id)
	name   string
}

// answeredAbsent records that the mount answers name in directory parent
// absent, as a negative entry the kernel caches for ttl. Call it before
// the directory is looked at for the last time before the answer.
func (nq *NotifyQueue) answeredAbsent(parent uint64, name string, ttl time.Duration) {
	now := time.Now()
	exp := now.Add(ttl)
	nq.mu.Lock()
	defer nq.mu.Unlock()
	if now.Before(nq.absentAll) {
		if exp.After(nq.absentAll) {
			nq.absentAll = exp
		}
		return
	}
	k := absentKey{parent, name}
	if _, ok := nq.absent[k]; !ok && len(nq.absent) >= maxAbsent {
		last := exp
		for k, e := range nq.absent {
			if !now.Before(e) {
				delete(nq.absent, k)
			} else if e.After(last) {
				last = e
			}
		}
		if len(nq.absent) >= maxAbsent {
			nq.absent = nil
			nq.absentAll = last
			return
		}
	}
	if nq.absent == nil {
		nq.absent = make(map[absentKey]time.Time)
	}
	if exp.After(nq.absent[k]) {
		nq.absent[k] = exp
	}
}

// mayCacheAbsent reports whether the kernel may cache name in directory
// parent as absent, and forgets the record: the caller queues the notice
// that makes the kernel forget it too.
func (nq *NotifyQueue) mayCacheAbsent(parent uint64, name string) bool {
	now := time.Now()
	nq.mu.Lock()
	defer nq.mu.Unlock()
	if now.Before(nq.absentAll) {
		return true
	}
	k := absentKey{parent, name}
	exp, ok := nq.absent[k]
	if ok {
		delete(nq.absent, k)
	}
	return ok && now.Before(exp)
}

// inheritAbsences records that the kernel may cache answers of an old
// process, for at least absentInheritedFor and the negative timeout neg.
func (nq *NotifyQueue) inheritAbsences(neg time.Duration) {
	until := time.Now().Add(max(neg, absentInheritedFor))
	nq.mu.Lock()
	if until.After(nq.absentAll) {
		nq.absentAll = until
	}
	nq.mu.Unlock()
}
