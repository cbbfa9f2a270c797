package dcache

import (
	"testing"
	"time"
)

// The hooks package state builds on: a rename's events are adjacent and
// marked Renamed; a change of times alone is an internal TOUCH; LastSeq
// numbers the last event; RegisterHook changes what Register creates,
// parents included; NodesByType follows creation and removal.

func TestRenameEventsAdjacentAndMarked(t *testing.T) {
	rec := &recorder{}
	ns := New(Options{Sink: rec, Now: newClock().Now})
	root := ns.Root()
	a, _ := root.Mkdir("a", 0755, fuseCaller)
	b, _ := root.Mkdir("b", 0755, fuseCaller)
	if _, err := a.Mknod("x", 0o20644, 1, 3, fuseCaller); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Mknod("victim", 0o10644, 0, 0, fuseCaller); err != nil {
		t.Fatal(err)
	}
	rec.take()
	if err := ns.Rename(a, "x", b, "victim", 0, fuseCaller); err != nil {
		t.Fatal(err)
	}
	evs := rec.take()
	if len(evs) != 3 {
		t.Fatalf("rename over a victim: %d events, want 3: %+v", len(evs), evs)
	}
	if evs[0].Kind != KindDelete || evs[0].Renamed || evs[0].Path != "b/victim" {
		t.Errorf("first event %+v, want the victim's plain DELETE", evs[0])
	}
	if evs[1].Kind != KindDelete || !evs[1].Renamed || evs[1].Path != "a/x" ||
		evs[2].Kind != KindCreate || !evs[2].Renamed || evs[2].Path != "b/victim" ||
		evs[1].Ino != evs[2].Ino || evs[2].Seq != evs[1].Seq+1 {
		t.Errorf("rename events %+v %+v, want adjacent Renamed DELETE a/x, CREATE b/victim", evs[1], evs[2])
	}
	if _, err := a.Mknod("y", 0o10644, 0, 0, fuseCaller); err != nil {
		t.Fatal(err)
	}
	rec.take()
	if err := ns.Rename(a, "y", b, "victim", RenameExchange, fuseCaller); err != nil {
		t.Fatal(err)
	}
	evs = rec.take()
	if len(evs) != 4 {
		t.Fatalf("exchange: %d events, want 4", len(evs))
	}
	for i, ev := range evs {
		if !ev.Renamed || ev.Seq != evs[0].Seq+uint64(i) {
			t.Errorf("exchange event %d %+v: want Renamed and consecutive", i, ev)
		}
	}
	if ns.LastSeq() != evs[3].Seq {
		t.Errorf("LastSeq %d, want %d", ns.LastSeq(), evs[3].Seq)
	}
}

func TestTouchEventForTimesAlone(t *testing.T) {
	rec := &recorder{}
	ns := New(Options{Sink: rec})
	n, _ := ns.Register("null", Spec{Type: TypeChar, Mode: 0666, Major: 1, Minor: 3}, loaderCaller)
	rec.take()
	when := time.Unix(1e9, 0)
	if _, err := n.SetAttr(SetAttrIn{Valid: SetMtime, Mtime: when}, fuseCaller); err != nil {
		t.Fatal(err)
	}
	if _, err := n.SetAttr(SetAttrIn{Valid: SetMode | SetMtimeNow, Mode: 0600}, fuseCaller); err != nil {
		t.Fatal(err)
	}
	evs := rec.take()
	if len(evs) != 2 || evs[0].Kind != KindTouch || evs[1].Kind != KindChange {
		t.Fatalf("events %+v, want TOUCH then CHANGE", evs)
	}
	if !KindTouch.Internal() || !KindExpire.Internal() || KindChange.Internal() {
		t.Error("Internal() is wrong")
	}
}

func TestRegisterHookAppliesToNodeAndParents(t *testing.T) {
	when := time.Unix(1234567890, 0)
	var seen []string
	ns := New(Options{RegisterHook: func(path string, s Spec) Spec {
		seen = append(seen, path)
		switch path {
		case "snd":
			s.Mode, s.Gid = 0750, 29
		case "snd/dsp":
			s.Mode, s.Uid, s.Mtime = 0660, 5, when
		}
		return s
	}})
	n, err := ns.Register("snd/dsp", Spec{Type: TypeChar, Mode: 0600, Major: 14, Minor: 3}, loaderCaller)
	if err != nil {
		t.Fatal(err)
	}
	if a := n.Attr(); a.Mode&PermMask != 0660 || a.Uid != 5 || !a.Mtime.Equal(when) {
		t.Errorf("dsp: %+v", a)
	}
	d, _ := ns.Resolve("snd")
	if a := d.Attr(); a.Mode&PermMask != 0750 || a.Gid != 29 {
		t.Errorf("snd: %+v", a)
	}
	if len(seen) != 2 || seen[0] != "snd" || seen[1] != "snd/dsp" {
		t.Errorf("hook saw %q", seen)
	}
}

func TestNodesByType(t *testing.T) {
	ns := New(Options{})
	root := ns.Root()
	ns.Register("a/b", Spec{Type: TypeSymlink, Target: "x"}, loaderCaller)
	root.Mknod("f", 0o10644, 0, 0, fuseCaller)
	by := ns.NodesByType()
	if by[TypeDir] != 2 || by[TypeSymlink] != 1 || by[TypeFifo] != 1 {
		t.Fatalf("by type %v", by)
	}
	ns.Unregister("a", loaderCaller)
	root.Unlink("f", fuseCaller)
	by = ns.NodesByType()
	if by[TypeDir] != 1 || by[TypeSymlink] != 0 || by[TypeFifo] != 0 {
		t.Fatalf("after removal %v", by)
	}
}

func TestSetNegativeTTLDropsLongerMisses(t *testing.T) {
	clk := newClock()
	rec := &recorder{}
	ns := New(Options{Sink: rec, Now: clk.Now, NegativeTTL: time.Hour})
	root := ns.Root()
	sub, _ := root.Mkdir("sub", 0755, fuseCaller)
	root.LockMu()
	root.AddNegativeLocked("old")
	root.UnlockMu()
	clk.Advance(50 * time.Minute) // "old" has 10 minutes left
	sub.LockMu()
	sub.AddNegativeLocked("new") // 60 minutes left
	sub.UnlockMu()
	rec.take()
	if n := ns.SetNegativeTTL(30 * time.Minute); n != 1 {
		t.Fatalf("dropped %d, want 1 (only the miss outliving 30m)", n)
	}
	evs := rec.take()
	if len(evs) != 1 || evs[0].Kind != KindExpire || evs[0].Path != "sub/new" {
		t.Fatalf("events %+v, want EXPIRE sub/new", evs)
	}
	if ns.NegativeTTL() != 30*time.Minute {
		t.Errorf("NegativeTTL %v", ns.NegativeTTL())
	}
	if n := ns.SetNegativeTTL(0); n != 1 || ns.NegativeTTL() != 0 {
		t.Fatalf("turning caching off dropped %d (want 1), ttl %v", n, ns.NegativeTTL())
	}
	root.LockMu()
	root.AddNegativeLocked("again")
	_, neg := root.ChildLocked("again")
	root.UnlockMu()
	if neg {
		t.Error("a miss was cached with negative caching off")
	}
}

// A RegisterHook that changes a node's type is a programming error and
// panics, but the panic leaves no directory mu held: a server that
// recovers it can still register in that directory.
func TestRegisterHookTypeChangePanicsUnlocked(t *testing.T) {
	ns := New(Options{RegisterHook: func(path string, s Spec) Spec {
		if path == "bad" {
			s.Type = TypeBlock
		}
		return s
	}})
	func() {
		defer func() {
			if p := recover(); p == nil {
				t.Fatal("a hook that changed the type did not panic")
			}
		}()
		ns.Register("bad", Spec{Type: TypeChar}, loaderCaller)
	}()
	done := make(chan error, 1)
	go func() {
		_, err := ns.Register("good", Spec{Type: TypeChar}, loaderCaller)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Register after the hook's panic blocked: the root's mu was left held")
	}
}
