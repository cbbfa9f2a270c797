package fs

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/devfsd/devfsd/dcache"
)

// A registration queues an entry notice only for a name the mount
// answered absent within its negative timeout (absent.go); a full record
// and a mount taken over notice every name.
func TestRegistrationNoticesOnlyANameAnsweredAbsent(t *testing.T) {
	nq := NewNotifyQueue(0)
	nq.enable()
	ctl := dcache.Caller{Origin: dcache.OriginControl}
	ev := func(kind dcache.Kind, name string, ino uint64) {
		nq.Event(dcache.Event{Kind: kind, Parent: 1, Name: name, Ino: ino, Caller: ctl})
	}
	f, step := runQueue(t, nq)
	step(func() { ev(dcache.KindRegister, "never", 10) }) // never answered absent: nothing to forget
	step(func() { nq.answeredAbsent(1, "asked", time.Minute); ev(dcache.KindRegister, "asked", 11) })
	// Unregistered and registered again with no LOOKUP between: the
	// notice above made the kernel forget the absence.
	step(func() { ev(dcache.KindUnregister, "asked", 11); ev(dcache.KindRegister, "asked", 12) })
	step(func() { nq.answeredAbsent(1, "expired", 0); ev(dcache.KindRegister, "expired", 13) })
	// More live answers than the queue records: every name counts.
	step(func() {
		for i := 0; i <= maxAbsent; i++ {
			nq.answeredAbsent(2, fmt.Sprint(i), time.Minute)
		}
		ev(dcache.KindRegister, "during-overflow", 14)
	})
	want := "[entry 1 asked delete 1 11 asked entry 1 during-overflow]"
	if got := fmt.Sprint(f.list()); got != want {
		t.Fatalf("notifies %s, want %s", got, want)
	}
	taken := NewNotifyQueue(0)
	taken.inheritAbsences(time.Second)
	if !taken.mayCacheAbsent(1, "anything") {
		t.Fatal("a mount taken over: a name not answered here is taken for not cached absent")
	}
}

// Lookup records the absence before its last look at the directory, so a
// registration either finds the record (and queues its notice) or made
// the name before that look, which then answers it. Mutant mutant_absent
// takes the last look out.
func TestLookupRacingARegistrationAnswersTheName(t *testing.T) {
	r := newRig(t, Options{NegativeTimeout: 10 * time.Second}, func(ctx context.Context, ns *dcache.Namespace, dir, name string) error {
		return syscall.ENOENT
	})
	out, st := r.lookup(1, "plain-miss")
	if recorded := r.s.nq.mayCacheAbsent(1, "plain-miss"); st != fuse.OK || out.NodeId != 0 || !recorded {
		t.Fatalf("a miss: %v %+v, recorded %v; want a negative entry, recorded", st, out, recorded)
	}
	if r.s.nq.mayCacheAbsent(1, "never-looked-up") {
		t.Fatal("a name never looked up counts as cached absent")
	}
	// The registration lands after the loader's answer, before the
	// record: it finds no record and queues no notice, so the lookup
	// must not answer "absent" (the kernel would then cache the absence
	// of a name that exists until the negative timeout).
	testBeforeAbsentRecord = func(name string) {
		if _, err := r.ns.Register(name, dcache.Spec{Type: dcache.TypeChar, Mode: 0o600, Major: 1, Minor: 3},
			dcache.Caller{Origin: dcache.OriginControl}); err != nil {
			t.Error(err)
		}
	}
	defer func() { testBeforeAbsentRecord = nil }()
	out, st = r.lookup(1, "late")
	if st != fuse.OK || out.NodeId == 0 {
		t.Fatalf("a name registered before the last look: %v %+v, want its node", st, out)
	}
}
