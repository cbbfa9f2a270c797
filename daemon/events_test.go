package daemon

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/devfsd/devfsd/control"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs"
	"github.com/devfsd/devfsd/state"
	"github.com/devfsd/devfsd/test/harness"
)

type recordSink struct {
	name    string
	got     *[]string
	lookups bool
}

func (r recordSink) Event(ev dcache.Event) { *r.got = append(*r.got, r.name+":"+ev.Path) }
func (r recordSink) WantsLookups() bool    { return r.lookups }

// Every peer sees every event, in the order wired; LOOKUP events are
// wanted while any peer wants them.
func TestFanoutPeers(t *testing.T) {
	var got []string
	f := fanout{recordSink{"a", &got, false}, recordSink{"b", &got, false}}
	f.Event(dcache.Event{Path: "x"})
	f.Event(dcache.Event{Path: "y"})
	if fmt.Sprint(got) != "[a:x b:x a:y b:y]" {
		t.Errorf("delivered %v", got)
	}
	if f.WantsLookups() {
		t.Error("wants lookups though no peer does")
	}
	f = append(f, recordSink{"c", &got, true})
	if !f.WantsLookups() {
		t.Error("does not want lookups though a peer does")
	}
}

// The daemon wires one fan-out: the store, the kernel notifies, the id
// ceiling's watch (only with a descriptor store) and the socket's hub are
// its peers, in that order; with socket: none there is no hub, and
// nothing of control is in the events' path.
func TestEventPathIsOneFanout(t *testing.T) {
	kinds := func(d *Daemon) string {
		var s []string
		for _, p := range d.events {
			switch p.(type) {
			case *state.Store, *storeRef: // the store, through the reference an upgrade swaps
				s = append(s, "store")
			case *fs.NotifyMux:
				s = append(s, "notify")
			case *control.Hub:
				s = append(s, "hub")
			case ceilingWatch:
				s = append(s, "ceiling")
			default:
				s = append(s, fmt.Sprintf("%T", p))
			}
		}
		return fmt.Sprint(s)
	}
	for _, tc := range []struct {
		name  string
		sock  bool
		state bool
		store bool // NOTIFY_SOCKET set
		want  string
	}{
		{name: "socket none", want: "[notify]"},
		{name: "socket", sock: true, want: "[notify hub]"},
		{name: "socket and state", sock: true, state: true, want: "[store notify hub]"},
		{name: "state, socket none", state: true, want: "[store notify]"},
		{name: "descriptor store", sock: true, state: true, store: true, want: "[store notify ceiling hub]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.store {
				newFakeSystemd(t)
			}
			cfg := testConfig(t)
			if !tc.sock {
				cfg.Socket = "none"
			}
			if tc.state {
				cfg.StateDir = filepath.Join(t.TempDir(), "state")
			}
			d := newTestDaemon(t, cfg, &harness.SyncBuffer{})
			if got := kinds(d); got != tc.want {
				t.Errorf("peers %s, want %s", got, tc.want)
			}
			if (d.hub != nil) != tc.sock {
				t.Errorf("hub %v with socket %v", d.hub, tc.sock)
			}
		})
	}
}
