package integration

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// crashRounds is how many times the crash test kills and restarts devfsd.
const crashRounds = 50

// nodeState is what the crash test checks of a node.
type nodeState struct {
	typ    uint32 // S_IFMT bits
	perm   uint32
	rdev   uint64
	target string
}

func (n nodeState) String() string {
	return fmt.Sprintf("type %o perm %04o rdev %d:%d target %q", n.typ, n.perm, unix.Major(n.rdev), unix.Minor(n.rdev), n.target)
}

// observe reads the state of p, or ok false if it does not exist.
func observe(t *testing.T, p string) (nodeState, bool) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nodeState{}, false
		}
		t.Fatalf("lstat %s: %v", p, err)
	}
	n := nodeState{typ: st.Mode & unix.S_IFMT, perm: st.Mode & 07777, rdev: st.Rdev}
	if n.typ == unix.S_IFLNK {
		tg, err := os.Readlink(p)
		if err != nil {
			t.Fatalf("readlink %s: %v", p, err)
		}
		n.target = tg
	}
	if n.typ != unix.S_IFCHR && n.typ != unix.S_IFBLK {
		n.rdev = 0
	}
	return n, true
}

// crashOp is one operation of the stream: its path, what it does, and the
// node it leaves behind.
type crashOp struct {
	path string
	desc string
	do   func(p string) error
	want nodeState
}

// The crash test: SIGKILL the daemon at random points during a stream of
// chmod, mknod, mkdir and symlink operations through the mount, restart it
// on the same state directory, 50 times; every operation acknowledged (its
// system call returned success) before the kill is there after the
// restart, nothing else appeared, and the state directory always opens
// (no corruption). The kill lands after a random number of acknowledged
// operations while the stream goes on, so it falls inside an operation;
// that one may or may not be kept. Seeded; DEVFSD_CRASH_SEED replays.
func TestCrashSafetyKillRestart(t *testing.T) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("DEVFSD_CRASH_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (DEVFSD_CRASH_SEED=%d replays)", seed, seed)
	old := unix.Umask(0) // the modes asked for are the modes made
	t.Cleanup(func() { unix.Umask(old) })
	rng := rand.New(rand.NewSource(seed))
	stateDir := filepath.Join(t.TempDir(), "state")

	// want: every path the stream made or changed, and what it must be.
	want := map[string]nodeState{}
	registered := []string{"null", "zero", "full", "random", "urandom", "tty", "loop0", "loop5"}
	perms := []uint32{0600, 0640, 0644, 0660, 0666, 0400, 0755, 0700, 0604, 0000}
	acked, maybeKept := 0, 0
	// inFlight is the operation a kill interrupted: the next start shows
	// the state before it or after it.
	var inFlight *crashOp

	for round := 0; round <= crashRounds; round++ {
		d := start(t, opts{args: []string{"--state-dir=" + stateDir, "--socket=none", "--log-level=info"}})
		if op := inFlight; op != nil {
			inFlight = nil
			before, hadBefore := want[op.path]
			catalogue := false // a registered device never changed before: its mode is the catalogue's
			if op.desc == "chmod" && !hadBefore {
				before, hadBefore, catalogue = registeredState(op.path), true, true
			}
			after := before
			if op.desc == "chmod" {
				after.perm = op.want.perm
			} else {
				after = op.want
			}
			got, ok := observe(t, d.path(op.path))
			switch {
			case ok && got == after:
				want[op.path] = after
			case ok && hadBefore && got == before:
			case ok && catalogue && got.typ == before.typ && got.rdev == before.rdev:
			case !ok && !hadBefore:
			default:
				t.Fatalf("round %d (seed %d): the %s of %s in flight at the kill left %v (exists %v); want %v or %v",
					round, seed, op.desc, op.path, got, ok, before, after)
			}
		}

		// Everything acknowledged so far is there, as it was left.
		var paths []string
		for p := range want {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			got, ok := observe(t, d.path(p))
			if !ok || got != want[p] {
				t.Fatalf("round %d (seed %d): %s is %v (exists %v), want %v", round, seed, p, got, ok, want[p])
			}
		}
		// Nothing appeared that the stream did not make.
		for r := 0; r < round; r++ {
			dir := fmt.Sprintf("r%02d", r)
			ents, err := os.ReadDir(d.path(dir))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			for _, e := range ents {
				if _, ok := want[dir+"/"+e.Name()]; !ok {
					t.Fatalf("round %d (seed %d): %s/%s exists; nothing acknowledged made it", round, seed, dir, e.Name())
				}
			}
		}

		if round == crashRounds {
			break // the last start only checks
		}
		// This round's stream.
		dir := fmt.Sprintf("r%02d", round)
		var ops []crashOp
		ops = append(ops, crashOp{path: dir, desc: "mkdir", want: nodeState{typ: unix.S_IFDIR, perm: 0755},
			do: func(p string) error { return unix.Mkdir(p, 0755) }})
		var made []string // kept nodes of this round the stream may chmod
		for i := 0; i < 80; i++ {
			switch k := rng.Intn(10); {
			case k < 4:
				p := fmt.Sprintf("%s/c%03d", dir, i)
				perm, maj, min := perms[rng.Intn(len(perms))], uint32(1+rng.Intn(200)), uint32(rng.Intn(256))
				ops = append(ops, crashOp{path: p, desc: "mknod", want: nodeState{typ: unix.S_IFCHR, perm: perm, rdev: unix.Mkdev(maj, min)},
					do: func(p string) error { return unix.Mknod(p, unix.S_IFCHR|perm, int(unix.Mkdev(maj, min))) }})
				made = append(made, p)
			case k < 6:
				p := fmt.Sprintf("%s/s%03d", dir, i)
				tg := fmt.Sprintf("../target-%d-%d", round, rng.Intn(1000))
				ops = append(ops, crashOp{path: p, desc: "symlink", want: nodeState{typ: unix.S_IFLNK, perm: 0777, target: tg},
					do: func(p string) error { return unix.Symlink(tg, p) }})
			case k < 7:
				p := fmt.Sprintf("%s/m%03d", dir, i)
				ops = append(ops, crashOp{path: p, desc: "mkdir", want: nodeState{typ: unix.S_IFDIR, perm: 0750},
					do: func(p string) error { return unix.Mkdir(p, 0750) }})
			default: // chmod: a node of this round, of an earlier one, or a registered device
				var p string
				switch {
				case len(made) > 0 && rng.Intn(2) == 0:
					p = made[rng.Intn(len(made))]
				default:
					p = registered[rng.Intn(len(registered))]
				}
				perm := perms[rng.Intn(len(perms))]
				ops = append(ops, crashOp{path: p, desc: "chmod", want: nodeState{perm: perm},
					do: func(p string) error { return unix.Chmod(p, perm) }})
			}
		}
		killAfter := 1 + rng.Intn(len(ops)-10) // acknowledged operations before the kill

		var done atomic.Int64
		var wg sync.WaitGroup
		results := make([]error, len(ops))
		ran := make([]bool, len(ops))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, op := range ops {
				results[i] = op.do(d.path(op.path))
				ran[i] = true
				if results[i] != nil {
					return // the daemon is gone: nothing after this can be served
				}
				done.Add(1)
			}
		}()
		// The killer waits, by operation count, for the random point.
		if !harness.Poll(condDeadline, 100*time.Microsecond, func() bool { return done.Load() >= int64(killAfter) }) {
			t.Fatalf("round %d: the stream stalled at %d of %d operations", round, done.Load(), killAfter)
		}
		d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.exited
		unix.Unmount(d.mnt, unix.MNT_DETACH)
		wg.Wait()

		// Fold the results into want: acknowledged operations must be
		// kept; the first failed one (in flight at the kill) may be.
		for i, op := range ops {
			if !ran[i] {
				break
			}
			if results[i] == nil {
				acked++
				apply(want, op)
				continue
			}
			maybeKept++
			inFlight = &ops[i]
			break
		}
		if strings.Contains(d.out.String(), "WARNING: DATA RACE") {
			t.Fatalf("round %d: data race:\n%s", round, d.out.String())
		}
	}
	t.Logf("%d rounds: %d operations acknowledged and kept, %d in flight at a kill", crashRounds, acked, maybeKept)
}

// apply folds an acknowledged operation into the expected state.
func apply(want map[string]nodeState, op crashOp) {
	if op.desc != "chmod" {
		want[op.path] = op.want
		return
	}
	n, ok := want[op.path]
	if !ok { // a registered device, first changed now
		n = registeredState(op.path)
	}
	n.perm = op.want.perm
	want[op.path] = n
}

// registeredState is a registered device as the built-in catalogue makes it.
func registeredState(p string) nodeState {
	devs := map[string][2]uint32{"null": {1, 3}, "zero": {1, 5}, "full": {1, 7}, "random": {1, 8}, "urandom": {1, 9},
		"tty": {5, 0}, "loop0": {7, 0}, "loop5": {7, 5}}
	d := devs[p]
	typ := uint32(unix.S_IFCHR)
	if strings.HasPrefix(p, "loop") {
		typ = unix.S_IFBLK
	}
	return nodeState{typ: typ, rdev: unix.Mkdev(d[0], d[1])}
}
