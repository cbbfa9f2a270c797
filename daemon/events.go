package daemon

import "github.com/devfsd/devfsd/dcache"

// fanout is the namespace's one event sink. Every event goes to each
// peer in turn, in the order the daemon wires them: the state store
// (what users changed is kept), the kernel notifies of every mount
// (fs.NotifyMux), and the control socket's subscribers (control.Hub),
// the last only when there is a socket. No peer forwards to another.
type fanout []dcache.Sink

// Event implements dcache.Sink.
func (f fanout) Event(ev dcache.Event) {
	for _, s := range f {
		s.Event(ev)
	}
}

// WantsLookups implements dcache.LookupSink: LOOKUP events are made
// while any peer wants them.
func (f fanout) WantsLookups() bool {
	for _, s := range f {
		if dcache.WantsLookups(s) {
			return true
		}
	}
	return false
}

var _ dcache.LookupSink = fanout(nil)
