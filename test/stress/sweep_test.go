package stress

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// TestExpiredMissIsSweptWithoutALookup: a miss cached by the daemon, that
// nobody looks up again, is dropped by the periodic sweep once it expired,
// and the kernel is told (an entry notify: notify_sent of GET /v1/stats
// moves although nothing else happens on the mount). Without the sweep
// the entry would sit there until a lookup met it, and no notify would
// ever be sent.
func TestExpiredMissIsSweptWithoutALookup(t *testing.T) {
	const negTTL = time.Second // the sweep then runs every second
	m, c, _ := mountDevfsd(t, harness.Options{Timeouts: true, EntryTimeout: time.Second,
		AttrTimeout: time.Second, NegativeTimeout: negTTL})
	before := extraStats(t, c)["notify_sent"]
	var st unix.Stat_t
	if err := unix.Lstat(inMount(m, "no-such-device-sweep"), &st); err != unix.ENOENT {
		t.Fatalf("lstat of a missing name: %v, want ENOENT", err)
	}
	// Expiry after negTTL, a sweep at most one interval later: wait for
	// the notify with a generous deadline, polling the counter.
	deadline := time.Now().Add(negTTL + 10*time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	for extraStats(t, c)["notify_sent"] == before {
		if time.Now().After(deadline) {
			t.Fatalf("notify_sent stayed at %d for %v after the miss: the expired negative entry was never swept",
				before, time.Since(start).Round(time.Millisecond))
		}
		<-tick.C
	}
	t.Logf("the expired miss was swept and the kernel told %v after the lookup", time.Since(start).Round(time.Millisecond))
}
