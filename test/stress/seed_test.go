package stress

// The seed's reproduction as a stress test (seeds/003: `ls /dev/foo & rm
// -f /dev/foo &` hung devfs 100% of the time: devfs_lookup retook the
// directory's i_sem before waking the revalidate waiter that held it; race
// R4 of DESIGN.md section 4).
//
// Setup: devfsd with every kernel cache timeout 0 (every access is a
// request, every miss goes to the loader), and a deliberately slow loader:
// a helper process attached to the control socket (the real helper
// protocol of docs/api.md) that answers every LOOKUP after
// -stress.loader-delay, registering a char device under the name when it
// starts with "slow" and nothing otherwise. The built-in loader would not
// do: it loads a module once per daemon, so a removed name it provides is
// never registered again. The helper is a sibling of the workers, not
// their ancestor (a helper's descendants bypass the lookup wait).
//
// Each of -stress.procs worker processes runs -stress.iterations
// iterations; each iteration picks one of two names at random (so that the
// processes collide on names too) and runs two or three system calls on it
// at once, from different threads, and waits for them all:
//
//	0  the seed:   lstat(fooK)  & unlink(fooK)                 (ls & rm -f)
//	1  mknod/rm:   mknod(fooK)  & unlink(fooK) & lstat(fooK)
//	2  slow names: lstat(slowK) & unlink(slowK)   (the loader registers slowK)
//	3  slow names: mknod(slowK) & lstat(slowK) & a listing of the root
//
// and every -stress.exec-every-th iteration instead runs the real `ls
// MNT/fooK` and `rm -f MNT/fooK` binaries at once (or slowK, alternately).
//
// Passing means: no iteration takes longer than -stress.deadline (30s,
// below the daemon's loader timeout of seedLoaderTimeout: a deadlock that
// only the timeout breaks fails too, while an iteration that is merely
// slow on a loaded machine — seconds, not half a minute — passes), no errno other than ENOENT and EEXIST (an `ls` that
// exits 2 must say "No such file or directory"), the daemon alive
// afterwards and serving, and no in-flight lookup record left
// (lookup_in_flight of GET /v1/stats, polled to 0 within a deadline).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/harness"
)

const seedNames = 2 // fooK and slowK, K in 0..seedNames-1

// seedLoaderTimeout is the daemon's loader_timeout in the seed test: twice
// the default -stress.deadline, so that a lookup released only by the
// timeout (a deadlock) outlasts the iteration bound.
const seedLoaderTimeout = 60 * time.Second

func TestSeedLsRmStress(t *testing.T) {
	for _, bin := range []string{"ls", "rm"} {
		if _, err := exec.LookPath(bin); err != nil && *flagExecEvery > 0 {
			t.Fatalf("%s not found: %v", bin, err)
		}
	}
	if *flagDeadline >= seedLoaderTimeout {
		t.Fatalf("-stress.deadline %v must stay below the loader timeout %v", *flagDeadline, seedLoaderTimeout)
	}
	m, c, sock := mountDevfsd(t, harness.Options{Timeouts: true,
		DevfsdArgs: []string{"--loader-timeout=" + seedLoaderTimeout.String()}})

	loader := startWorker(t, "loader", workerConfig{Socket: sock, Delay: *flagDelay, Mount: m.Dir})
	waitAttached(t, loader)

	start := time.Now()
	var ws []*worker
	for i := 0; i < *flagProcs; i++ {
		ws = append(ws, startWorker(t, "seed", workerConfig{Index: i, Mount: m.Dir, Daemon: m.Pid(),
			Iterations: *flagIterations, Deadline: *flagDeadline, ExecEvery: *flagExecEvery}))
	}
	waitWorkers(t, *flagBudget, ws...)
	elapsed := time.Since(start)

	total, execs := 0, 0
	var slowest time.Duration
	hung := false
	for _, w := range ws {
		s, err := w.summary()
		if err != nil {
			t.Error(err)
			continue
		}
		hung = hung || s.Errors["iteration hang"] > 0
		total += s.Cycles
		execs += s.Execs
		slowest = max(slowest, s.Slowest)
		if len(s.Errors) > 0 {
			t.Errorf("%s: errors %v; first ones:\n  %s", w.name, s.Errors, joinLines(s.Samples))
		}
		if s.Cycles != *flagIterations {
			t.Errorf("%s: %d iterations, want %d:\n  %s", w.name, s.Cycles, *flagIterations, joinLines(s.Samples))
		}
		t.Logf("%s: %d iterations, %d real binaries, slowest iteration %v, allowed errnos %v",
			w.name, s.Cycles, s.Execs, s.Slowest.Round(time.Microsecond), s.Errnos)
	}
	if hung {
		t.Fatalf("an iteration hung; the worker had devfsd dump its goroutines (its output follows)")
	}
	// The daemon is checked while the helper is still attached: a record
	// left in flight would otherwise be answered by the helper's detach.
	checkDaemonHealthy(t, m, c)
	ex := extraStats(t, c)
	if v, ok := metric(t, c, `devfsd_loads_total{loader="helper",result="timeout"}`); ok && v != 0 {
		t.Errorf("%v loads timed out (the slow loader answers in %v)", v, *flagDelay)
	}

	// Stop the loader and read what it did.
	loader.cmd.Process.Signal(unix.SIGTERM)
	waitWorkers(t, 10*time.Second, loader)
	ls, err := loader.summary()
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.Errors) > 0 {
		t.Errorf("loader: errors %v:\n  %s", ls.Errors, joinLines(ls.Samples))
	}
	if ls.Registered == 0 {
		t.Error("the slow loader registered nothing: the slow-name iterations did not exercise it")
	}
	t.Logf("%d processes x %d iterations = %d in %v (%d real ls/rm); slowest iteration %v; loader: %d lookups answered, %d names registered; daemon: %d loads",
		len(ws), *flagIterations, total, elapsed.Round(time.Millisecond), execs, slowest.Round(time.Microsecond),
		ls.Loads, ls.Registered, ex["lookup_loads"])
}

// waitAttached waits for the loader's "attached" line.
func waitAttached(t *testing.T, w *worker) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !strings.Contains(w.out.String(), "attached\n") {
		select {
		case <-w.done:
			t.Fatalf("the loader exited: %v\n%s", w.err, w.out.String())
		case <-deadline.C:
			t.Fatalf("the loader did not attach within 20s:\n%s", w.out.String())
		case <-tick.C:
		}
	}
}

// seedMain runs the iterations of one worker process.
func seedMain(cfg workerConfig) *summary {
	s := &summary{}
	var mu sync.Mutex  // guards s while an iteration's calls run
	abandoned := false // guarded by mu: a hang was reported; calls still stuck record nothing
	record := func(allowed bool, op string, err error) {
		mu.Lock()
		if !abandoned {
			s.errno(allowed, op, err)
		}
		mu.Unlock()
	}
	// check classifies a system call's result: ENOENT and EEXIST allowed.
	check := func(op string, err error) {
		switch err {
		case nil:
		case unix.ENOENT, unix.EEXIST:
			record(true, op, err)
		default:
			record(false, op, err)
		}
	}
	lstat := func(p string) func() {
		return func() {
			var st unix.Stat_t
			check("lstat", unix.Lstat(p, &st))
		}
	}
	unlink := func(p string) func() { return func() { check("unlink", unix.Unlink(p)) } }
	mknod := func(p string) func() {
		return func() { check("mknod", unix.Mknod(p, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3)))) }
	}
	list := func(p string) func() {
		return func() {
			_, err := listDir(p)
			check("readdir", err)
		}
	}
	run := func(bin string, args ...string) func() {
		return func() {
			var out bytes.Buffer
			cmd := exec.Command(bin, args...)
			cmd.Dir = "/"
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			mu.Lock()
			if !abandoned {
				s.Execs++
			}
			mu.Unlock()
			var ee *exec.ExitError
			switch {
			case err == nil:
			case bin == "ls" && errors.As(err, &ee) && ee.ExitCode() == 2 && strings.Contains(out.String(), "No such file or directory"):
				record(true, "ls", unix.ENOENT)
			default:
				record(false, bin, fmt.Errorf("%v: %s", err, strings.TrimSpace(out.String())))
			}
		}
	}

	// Names are drawn at random from a small set, so that the processes
	// also collide with each other on the same name.
	rng := rand.New(rand.NewPCG(uint64(cfg.Index), uint64(os.Getpid())))
	for j := 0; j < cfg.Iterations; j++ {
		k := rng.IntN(seedNames)
		foo := filepath.Join(cfg.Mount, fmt.Sprintf("foo%d", k))
		slow := filepath.Join(cfg.Mount, fmt.Sprintf("slow%d", k))
		var calls []func()
		var what string
		switch {
		case cfg.ExecEvery > 0 && j%cfg.ExecEvery == cfg.ExecEvery-1:
			p := foo
			if (j/cfg.ExecEvery)%2 == 1 {
				p = slow
			}
			what = "ls & rm -f " + p
			calls = []func(){run("ls", p), run("rm", "-f", p)}
		case j%4 == 0:
			what = "lstat & unlink " + foo
			calls = []func(){lstat(foo), unlink(foo)}
		case j%4 == 1:
			what = "mknod & unlink & lstat " + foo
			calls = []func(){mknod(foo), unlink(foo), lstat(foo)}
		case j%4 == 2:
			what = "lstat & unlink " + slow
			calls = []func(){lstat(slow), unlink(slow)}
		default:
			what = "mknod & lstat " + slow + " & list"
			calls = []func(){mknod(slow), lstat(slow), list(cfg.Mount)}
		}
		t0 := time.Now()
		var wg sync.WaitGroup
		for _, f := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f()
			}()
		}
		done := make(chan struct{})
		go func() {
			wg.Wait()
			close(done)
		}()
		timer := time.NewTimer(cfg.Deadline)
		select {
		case <-done:
			timer.Stop()
		case <-timer.C:
			mu.Lock()
			s.sample("HANG: iteration %d (%s) not done after %v", j, what, cfg.Deadline)
			s.errno(false, "iteration", errors.New("hang"))
			abandoned = true
			mu.Unlock()
			fmt.Printf("HANG iteration %d (%s)\n", j, what)
			// The calls are stuck: have the daemon dump its
			// goroutines now, while they are (exiting would
			// interrupt them). A daemon killed while a thread of
			// it is in a kernel notify, waiting on a directory
			// lock that a stuck caller holds, never finishes
			// dying: abort the connection so that every process
			// can end.
			dumpDaemon(cfg.Daemon)
			if err := abortFUSE(cfg.Mount); err != nil {
				fmt.Fprintln(os.Stderr, "abort:", err)
			}
			return s
		}
		if d := time.Since(t0); d > s.Slowest {
			s.Slowest = d
		}
		s.Cycles++
		progress.Add(1)
	}
	return s
}

// loaderMain is the slow helper: it attaches to the control socket and
// answers every LOOKUP after cfg.Delay, registering slow* names, until
// SIGTERM (or the stream ends).
func loaderMain(cfg workerConfig) *summary {
	s := &summary{}
	var mu sync.Mutex
	c := client.New(cfg.Socket)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hs, err := c.AttachHelper(ctx)
	if err != nil {
		s.errno(false, "attach", err)
		return s
	}
	fmt.Println("attached")
	term := make(chan struct{})
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	go func() {
		<-sigs
		close(term)
		hs.Close() // ends Next
	}()
	var wg sync.WaitGroup
	for {
		rec, err := hs.Next()
		if err != nil {
			select {
			case <-term: // asked to stop
			default:
				mu.Lock()
				s.errno(false, "helper stream", err)
				mu.Unlock()
			}
			break
		}
		if rec.Type != "lookup" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTimer(cfg.Delay) // the behaviour under test: a slow loader
			<-t.C
			registered := false
			msg := "no such device"
			if strings.HasPrefix(rec.Name, "slow") {
				major, minor := int64(1), int64(3)
				_, err := c.Register(ctx, wire.RegisterRequest{Path: rec.Path, Type: "char", Mode: "0644", Major: &major, Minor: &minor})
				switch {
				case err == nil:
					registered, msg = true, ""
				case client.Code(err) == wire.CodeExists:
					msg = ""
				default:
					msg = err.Error()
					mu.Lock()
					s.errno(false, "register", err)
					mu.Unlock()
				}
			}
			err := hs.Done(ctx, rec.ID, msg)
			mu.Lock()
			defer mu.Unlock()
			s.Loads++
			progress.Add(1)
			if registered {
				s.Registered++
			}
			if err != nil && client.Code(err) != wire.CodeUnknownLookup {
				s.errno(false, "done", err)
			}
		}()
	}
	wg.Wait()
	return s
}

// dumpDaemon makes the daemon print its goroutines (SIGQUIT: the Go
// runtime dumps every goroutine and exits), for the failure log that
// harness.MountT's cleanup writes, and waits (bounded) until it exited.
func dumpDaemon(pid int) {
	if pid <= 0 || unix.Kill(pid, unix.SIGQUIT) != nil {
		return
	}
	deadline := time.Now().Add(reapDeadline)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !exited(pid) && time.Now().Before(deadline) {
		<-tick.C
	}
}

// exited reports whether pid is gone or a zombie (its dump is written).
func exited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	st := string(b)
	i := strings.LastIndexByte(st, ')')
	return i < 0 || i+2 >= len(st) || st[i+2] == 'Z'
}
