package kernel

import "sync/atomic"

// statActions are the actions counted one by one; anything else counts as
// "other".
var statActions = [...]string{ActionAdd, ActionRemove, ActionChange, ActionMove, ActionBind, ActionUnbind, ActionOnline, ActionOffline}

type counters struct {
	received         [len(statActions) + 1]atomic.Uint64 // by statActions index; last: other
	forged           atomic.Uint64
	malformed        atomic.Uint64
	stale            atomic.Uint64
	overruns         atomic.Uint64
	rescans          atomic.Uint64
	collisions       atomic.Uint64
	failures         atomic.Uint64
	autoloads        atomic.Uint64
	autoloadFailures atomic.Uint64
}

func (c *counters) countAction(a string) {
	for i, s := range statActions {
		if s == a {
			c.received[i].Add(1)
			return
		}
	}
	c.received[len(statActions)].Add(1)
}

// Stats are the source's counters, for metrics.
type Stats struct {
	// Received counts the uevents applied and found stale, by action
	// ("add", "remove", "change", "move", "bind", "unbind", "online",
	// "offline", "other"); every action has an entry.
	Received map[string]uint64
	// Forged counts messages not sent by the kernel, ignored.
	Forged uint64
	// Malformed counts uevents and sysfs devices refused (not a uevent, a
	// DEVNAME with "..", an absolute DEVNAME, a number out of range, ...).
	Malformed uint64
	// Stale counts uevents whose SEQNUM was not after the last applied
	// (or after the kernel's count when the last scan began: a rescan
	// supersedes the uevents still queued).
	Stale uint64
	// Overruns counts receive buffer overruns (ENOBUFS: uevents lost).
	Overruns uint64
	// Rescans counts rescans of sysfs after start: after an overrun, or
	// asked for (Rescan).
	Rescans uint64
	// Collisions counts kernel devices whose name was taken by a node the
	// source had not registered.
	Collisions uint64
	// Failures counts registrations refused by the namespace for another
	// reason (a parent that is not a directory, the node limit).
	Failures uint64
	// Autoloads counts runs of the modprobe program; AutoloadFailures
	// those that failed (exit status, deadline, could not start).
	Autoloads, AutoloadFailures uint64
	// Devices is the number of devices known now, Registered the number
	// of nodes registered for them now.
	Devices, Registered int
}

// Stats returns the counters.
func (s *Source) Stats() Stats {
	st := Stats{Received: make(map[string]uint64, len(statActions)+1)}
	for i, a := range statActions {
		st.Received[a] = s.st.received[i].Load()
	}
	st.Received["other"] = s.st.received[len(statActions)].Load()
	st.Forged = s.st.forged.Load()
	st.Malformed = s.st.malformed.Load()
	st.Stale = s.st.stale.Load()
	st.Overruns = s.st.overruns.Load()
	st.Rescans = s.st.rescans.Load()
	st.Collisions = s.st.collisions.Load()
	st.Failures = s.st.failures.Load()
	st.Autoloads = s.st.autoloads.Load()
	st.AutoloadFailures = s.st.autoloadFailures.Load()
	s.mu.Lock()
	st.Devices, st.Registered = len(s.byPath), s.reg
	s.mu.Unlock()
	return st
}
