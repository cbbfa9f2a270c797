package dcache

import (
	"slices"
	"testing"
	"time"
)

// DropNegativesAt forgets the misses of the names given and only those:
// a cached miss elsewhere stays, a name that exists is not touched, a
// path under a missing directory is skipped.
func TestDropNegativesAtOnlyThose(t *testing.T) {
	rec := &recorder{}
	ns := New(Options{NegativeTTL: time.Hour, Sink: rec})
	sub, err := ns.Register("widgets/x", Spec{Type: TypeChar}, loaderCaller)
	if err != nil {
		t.Fatal(err)
	}
	widgets := sub.Parent()
	r := ns.Root()
	r.LockMu()
	r.AddNegativeLocked("widget0")
	r.AddNegativeLocked("other")
	r.UnlockMu()
	widgets.LockMu()
	widgets.AddNegativeLocked("first")
	widgets.UnlockMu()
	rec.take()

	n := ns.DropNegativesAt([]string{"widget0", "widgets/first", "widgets/x", "nodir/y", "uncached"})
	if n != 2 {
		t.Errorf("dropped %d, want 2", n)
	}
	var expired []string
	for _, ev := range rec.take() {
		if ev.Kind != KindExpire {
			t.Errorf("event %v", ev.Kind)
		}
		expired = append(expired, ev.Path)
	}
	// uncached: the kernel may hold a miss the daemon did not keep.
	if want := []string{"widget0", "widgets/first", "uncached"}; !slices.Equal(expired, want) {
		t.Errorf("EXPIRE events for %q, want %q", expired, want)
	}
	isNeg := func(d *Node, name string) bool {
		d.LockMu()
		defer d.UnlockMu()
		_, neg := d.ChildLocked(name)
		return neg
	}
	if isNeg(r, "widget0") || isNeg(widgets, "first") {
		t.Error("a named miss survived")
	}
	if !isNeg(r, "other") {
		t.Error("a miss not named was dropped")
	}
}
