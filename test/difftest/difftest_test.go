package difftest

import (
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/devfsd/devfsd/test/harness"
)

var (
	seedFlag = flag.Uint64("difftest.seed", 0, "first sequence seed (0: from the clock); sequence i uses seed+i")
	seqsFlag = flag.Int("difftest.seqs", 0, "sequences per pair (0: 2000, 200 with -short)")
	opsFlag  = flag.Int("difftest.ops", 40, "operations per sequence")
)

func TestMain(m *testing.M) { harness.Main(m) }

// TestGenerateIsDeterministic: a seed alone replays a sequence.
func TestGenerateIsDeterministic(t *testing.T) {
	for seed := uint64(1); seed < 50; seed++ {
		a, b := Generate(seed, 60), Generate(seed, 60)
		for i := range a {
			if a[i] != b[i] {
				t.Fatalf("seed %d op %d: %v then %v", seed, i, a[i], b[i])
			}
		}
	}
	if fmt.Sprint(Generate(1, 10)) == fmt.Sprint(Generate(2, 10)) {
		t.Fatal("seeds 1 and 2 generate the same sequence")
	}
}

// pair is a reference and a file system under test, with the mount options
// of the latter.
type pair struct {
	name string
	b    harness.Backend
	o    harness.Options
	// share of the sequence count this pair runs (the tmpfs self-check
	// only proves the framework deterministic and needs fewer).
	share float64
}

func pairs() []pair {
	t0 := harness.Options{Timeouts: true} // every lookup and getattr reaches the server
	t1 := harness.Options{Timeouts: true, EntryTimeout: time.Second, AttrTimeout: time.Second, NegativeTimeout: time.Second}
	return []pair{
		{"tmpfs-vs-tmpfs", harness.Tmpfs(), harness.Options{}, 0.25},
		{"tmpfs-vs-barefs-t1", harness.Barefs(), t1, 1},
		{"tmpfs-vs-barefs-t0", harness.Barefs(), t0, 0.5},
		{"tmpfs-vs-devfsd-t1", harness.Devfsd(), t1, 1},
		{"tmpfs-vs-devfsd-t0", harness.Devfsd(), t0, 1},
	}
}

// TestDifferential runs the same random operation sequences on a tmpfs
// directory and on each other backend (tmpfs itself as a self-check of the
// framework), comparing every result, errno and the final tree. On a
// divergence it prints the sequence, the results and the seed to replay it.
func TestDifferential(t *testing.T) {
	seqs := *seqsFlag
	if seqs == 0 {
		seqs = 2000
		if testing.Short() {
			seqs = 200
		}
	}
	base := *seedFlag
	if base == 0 {
		base = uint64(time.Now().UnixNano()) & (1<<40 - 1)
	}
	t.Logf("first seed %d (replay all with -difftest.seed=%d -difftest.seqs=%d)", base, base, seqs)
	for _, p := range pairs() {
		t.Run(p.name, func(t *testing.T) {
			ref := harness.MountT(t, harness.Tmpfs(), harness.Options{})
			sut := harness.MountT(t, p.b, p.o)
			n := max(1, int(float64(seqs)*p.share))
			if *seqsFlag != 0 {
				n = seqs
			}
			a := Side{"tmpfs", ref.Dir}
			b := Side{p.b.Name(), sut.Dir}
			start := time.Now()
			for i := 0; i < n; i++ {
				seed := base + uint64(i)
				d, err := RunSequence(a, b, seed, *opsFlag)
				if err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if d != nil {
					t.Fatalf("%v\nreplay: go test ./test/difftest -run 'TestDifferential/%s$' -difftest.seed=%d -difftest.seqs=1 -difftest.ops=%d -v",
						d, p.name, seed, *opsFlag)
				}
				if !sut.Alive() {
					t.Fatalf("%s server died during seed %d", p.b.Name(), seed)
				}
			}
			t.Logf("%d sequences of %d operations equal in %v", n, *opsFlag, time.Since(start).Round(time.Millisecond))
		})
	}
	harness.CheckNoMounts(t)
}
