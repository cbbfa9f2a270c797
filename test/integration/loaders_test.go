package integration

// The loaders at the edges: a helper that dies with a lookup pending, and
// programs (exec loader, EXECUTE) whose parent is killed.

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// A lookup pending when its helper is killed goes to the fallback loader
// (the built-in catalogue) at once: the name it provides is answered with
// its node, promptly (long before the loader timeout), and nothing is
// cached negatively for it (the negative timeout is long; a second stat
// sees the node too, as does a stat of the module's other nodes).
func TestHelperKilledPendingLookupFallsBack(t *testing.T) {
	d := startCtl(t, "--loader-timeout=60s", "--negative-timeout=60s")
	h := startHelper(t, d, "--hang")
	type result struct {
		fi  os.FileInfo
		err error
		at  time.Time
	}
	res := make(chan result, 1)
	go func() {
		fi, err := os.Stat(d.path("loop3"))
		res <- result{fi, err, time.Now()}
	}()
	h.waitLine("the pending lookup of loop3", func(l string) bool {
		return strings.HasPrefix(l, "lookup ") && strings.Contains(l, "loop3")
	})
	killed := time.Now()
	h.kill()
	var r result
	select {
	case r = <-res:
	case <-time.After(condDeadline):
		t.Fatalf("the pending stat of loop3 was not answered within %v of the helper's death", condDeadline)
	}
	if r.err != nil {
		t.Fatalf("the pending stat of loop3 after the helper died: %v, want the built-in node", r.err)
	}
	if r.fi.Mode()&os.ModeDevice == 0 || r.fi.Mode()&os.ModeCharDevice != 0 {
		t.Fatalf("loop3: mode %v, want a block device", r.fi.Mode())
	}
	// Well before the 60s loader timeout: the fallback was asked at once,
	// not after the deadline.
	if late := r.at.Sub(killed); late > condDeadline/2 {
		t.Errorf("answered %v after the kill", late)
	}
	for _, name := range []string{"loop3", "loop4"} {
		if _, err := os.Stat(d.path(name)); err != nil {
			t.Errorf("stat %s again: %v", name, err)
		}
	}
	s, err := d.c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Helper.Aborted != 1 {
		t.Errorf("helper stats %+v, want 1 aborted", s.Helper)
	}
}
