// Command probe measures the "must show" figures of issue 17 (the devfsd
// helper daemon at the speed of the built-in loader):
//
//  1. A container start's probes of its /dev — open null, zero and full,
//     read 16 bytes of urandom, stat tty, ptmx and console, lstat pts, shm,
//     fd and stdin, one listing of the root, lstat of 8 absent names —
//     on a devfsd mount against a tmpfs populated like it (the mount's
//     root copied with mknod, symlink and mkdir, a devpts on pts and a
//     tmpfs on shm, as devfsd mounts them), at 1 and 8 threads: starts per
//     second, the ratio devfsd/tmpfs (the median of the ratios paired by
//     repetition), the daemon's CPU per start and the FUSE requests per
//     start by opcode.
//  2. The same on a second devfsd whose helper is attached and answers
//     nothing (`devfsd helper` with an empty devfsd.conf: every lookup is
//     answered done with no registration), against the daemon without one.
//  3. A miss answered by an exec loader program that runs `devfsd ctl
//     register` for the name, and (for reference) one that prints the
//     registration on its standard output: lstat latency, p50.
//  4. Register through the socket (POST /v1/register from one keep-alive
//     client) until an lstat on the mount sees the name: latency, and the
//     POST alone; on a fresh name, and on one whose miss was just cached.
//  5. (Not by default.) The socket's floors, for scale against item 4: a
//     request that changes nothing against a raw socket echo, a minimal
//     HTTP/1.1 loop, a bare net/http server and the daemon (floors.go).
//
// Every mount is a separate process started by test/harness with the
// daemon's defaults (timeouts 1 s, READDIRPLUS auto, the built-in
// catalogue), mounted once for the whole run. Item 1 and 2's backends run
// in phases of -phase each, interleaved: in every repetition each backend
// runs once per thread count, in an order rotated from one repetition to
// the next, so that load drift hits all of them alike; ratios are medians
// of the ratios within one repetition. The daemon's CPU is the run time of
// its threads over each phase (schedstat, ns), and utime+stime of
// /proc/PID/stat summed over all its phases of the run divided by its
// starts (10 ms ticks: read it only over a long run). FUSE requests are
// the daemon's own counts (devfsd_fuse_request_duration_seconds_count{op}
// on its socket's /metrics), which leave out the requests it does not
// answer (FORGET, RELEASE, RELEASEDIR); -opcount counts every request from
// go-fuse's debug log instead, on one more mount.
//
// -pprof FILE takes a CPU profile of a devfsd daemon (the test hook
// DEVFSD_TEST_PPROF) while it serves starts, for `go tool pprof -top`.
// -devfsd-old PATH adds the backends devfsd-old and devfsd-old+helper to
// items 1 and 2 (a binary of another tree, its own `devfsd helper`),
// interleaved with the others, with the ratios new/old, and a devfsd-old
// daemon to item 4, sample by sample beside the other.
//
//	go build -o /tmp/probe ./test/bench/probe && /tmp/probe [-reps 7] [-phase 1s]
//
// Run as root from the repository (it builds cmd/devfsd with the test
// hooks, or takes DEVFSD_BIN).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/harness"
	"golang.org/x/sys/unix"
)

func main() {
	err := run(os.Stdout)
	for _, f := range cleanups {
		f()
	}
	if cerr := harness.Cleanup(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
		os.Exit(1)
	}
}

// cleanups run at exit, last registered first.
var cleanups []func()

func atExit(f func()) { cleanups = slices.Insert(cleanups, 0, f) }

var (
	quick     = flag.Bool("quick", false, "short phases, one repetition, few samples: a smoke run")
	reps      = flag.Int("reps", 7, "repetitions of items 1 and 2 (medians are taken over them)")
	phase     = flag.Duration("phase", time.Second, "length of one measured phase of items 1 and 2")
	thFlag    = flag.String("threads", "1,8", "thread counts of items 1 and 2")
	items     = flag.String("items", "1,2,3,4", "items to run (1 probes, 2 helper, 3 exec loader, 4 socket register, 5 the socket's floors; \"\" none)")
	execN     = flag.Int("exec-n", 10, "item 3: misses per loader program")
	regN      = flag.Int("reg-n", 300, "item 4: registrations per case; item 5: samples per server")
	pprofFile = flag.String("pprof", "", "write a CPU profile of a devfsd daemon serving starts to this file")
	pprofSecs = flag.Int("pprof-seconds", 10, "length of the -pprof profile")
	pprofTh   = flag.Int("pprof-threads", 8, "threads of the -pprof run")
	pprofHelp = flag.Bool("pprof-helper", false, "-pprof: profile the daemon with the empty helper attached")
	pprofOf   = flag.String("pprof-of", "starts", "-pprof: what the daemon serves while profiled: starts (item 1) or register (item 4's fresh names, one client)")
	opcount   = flag.Int("opcount", 0, "count every FUSE request of this many starts (1 thread) from go-fuse's debug log, on a mount of its own")
	absentN   = flag.Int("absent", len(absentNames), "absent names a start lstats (at most 8)")
	floorKind = flag.String("serve-floor", "", "(internal) serve item 5's floor server of this kind at -serve-path")
	floorPath = flag.String("serve-path", "", "(internal) -serve-floor's socket")
	oldBin    = flag.String("devfsd-old", "", "a devfsd binary of another tree, measured as devfsd-old (and devfsd-old+helper) in items 1, 2 and 4")
)

func run(w io.Writer) error {
	flag.Parse()
	if *floorKind != "" {
		return serveFloor(*floorKind, *floorPath)
	}
	if *quick {
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["reps"] {
			*reps = 1
		}
		if !set["phase"] {
			*phase = 100 * time.Millisecond
		}
		if !set["exec-n"] {
			*execN = 1
		}
		if !set["reg-n"] {
			*regN = 10
		}
	}
	var threads []int
	for _, s := range strings.Split(*thFlag, ",") {
		k, err := strconv.Atoi(s)
		if err != nil || k < 1 {
			return fmt.Errorf("bad -threads %q", *thFlag)
		}
		threads = append(threads, k)
	}
	want := map[string]bool{}
	for _, s := range strings.Split(*items, ",") {
		if s == "" && *items == "" {
			break // none: only -opcount or -pprof
		}
		if !slices.Contains([]string{"1", "2", "3", "4", "5"}, s) {
			return fmt.Errorf("bad -items %q: items are 1, 2, 3, 4, 5", *items)
		}
		want[s] = true
	}
	if *absentN < 0 || *absentN > len(absentNames) {
		return fmt.Errorf("-absent %d: 0 to %d", *absentN, len(absentNames))
	}
	if *oldBin != "" {
		abs, err := filepath.Abs(*oldBin)
		if err != nil {
			return err
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("-devfsd-old %q: not an executable file", *oldBin)
		}
		*oldBin = abs
	}
	bin, err := devfsdBin()
	if err != nil {
		return err
	}
	header(w, bin)

	if want["1"] || want["2"] {
		if err := probes(w, bin, threads, want["2"]); err != nil {
			return err
		}
	}
	if want["3"] {
		if err := execMiss(w, bin); err != nil {
			return fmt.Errorf("item 3: %w", err)
		}
	}
	if want["4"] {
		if err := socketRegister(w); err != nil {
			return fmt.Errorf("item 4: %w", err)
		}
	}
	if want["5"] {
		if err := socketFloors(w); err != nil {
			return fmt.Errorf("item 5: %w", err)
		}
	}
	if *opcount > 0 {
		if err := opCount(w, bin, *opcount); err != nil {
			return fmt.Errorf("-opcount: %w", err)
		}
	}
	if *pprofFile != "" {
		if err := profile(w, bin); err != nil {
			return fmt.Errorf("-pprof: %w", err)
		}
	}
	fmt.Fprintf(w, "\nload average at end: %s\n", loadavg())
	return nil
}

// devfsdBin is the devfsd binary the harness mounts (DEVFSD_BIN, else
// cmd/devfsd of this tree built with the test hooks), for `devfsd helper`
// and `devfsd ctl` too.
func devfsdBin() (string, error) {
	if b := os.Getenv("DEVFSD_BIN"); b != "" {
		return b, nil
	}
	return harness.Build(harness.DevfsdPkg)
}

func header(w io.Writer, bin string) {
	var uts unix.Utsname
	unix.Uname(&uts)
	tree := "DEVFSD_BIN=" + bin
	if os.Getenv("DEVFSD_BIN") == "" {
		tree = "this tree"
		if root, err := harness.ModuleRoot(); err == nil {
			if out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output(); err == nil {
				tree = "commit " + strings.TrimSpace(string(out))
				if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
					tree += " (with uncommitted changes)"
				}
			}
		}
	}
	fmt.Fprintf(w, "probe: %s, Linux %s, %d CPUs, devfsd of %s, load average at start %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), strings.TrimRight(string(uts.Release[:]), "\x00"),
		runtime.NumCPU(), tree, loadavg())
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// target is one backend of items 1 and 2, mounted for the whole run.
type target struct {
	label  string
	m      *harness.Mount
	helper *helperProc // nil: none attached
	ps     *probeSet
	// Run totals over its phases, for utime+stime per start.
	ticks  uint64
	starts int
}

type sample struct {
	perSec    float64
	cpuPerOp  float64 // µs of daemon CPU per start; -1 n/a
	helperCPU float64 // µs of helper CPU per start; -1 n/a
	// helperLookups is the LOOKUP requests sent to the helper in the
	// phase (misses whose negative entries had expired).
	helperLookups float64
	reqs          map[string]float64 // FUSE requests of the phase, by opcode
	starts        int
	ticksDelta    uint64
}

// mountDevfsd mounts a devfsd (bin "" for the harness's own) with a socket.
func mountDevfsd(bin string, o harness.Options) (*harness.Mount, error) {
	if bin != "" {
		prev, had := os.LookupEnv("DEVFSD_BIN")
		os.Setenv("DEVFSD_BIN", bin)
		defer func() {
			if had {
				os.Setenv("DEVFSD_BIN", prev)
			} else {
				os.Unsetenv("DEVFSD_BIN")
			}
		}()
	}
	o.Stats = true
	m, err := harness.Start(harness.Devfsd(), o)
	if err != nil {
		return nil, err
	}
	atExit(func() { m.Close() })
	return m, nil
}

func probes(w io.Writer, bin string, threads []int, withHelper bool) error {
	dev, err := mountDevfsd("", harness.Options{})
	if err != nil {
		return err
	}
	tm, err := harness.Start(harness.Tmpfs(), harness.Options{})
	if err != nil {
		return err
	}
	subs, n, err := copyTree(dev.Dir, tm.Dir)
	atExit(func() {
		for _, s := range slices.Backward(subs) {
			unix.Unmount(s, unix.MNT_DETACH)
		}
		tm.Close()
	})
	if err != nil {
		return fmt.Errorf("populating tmpfs like %s: %w", dev.Dir, err)
	}
	targets := []*target{
		{label: "tmpfs", m: tm, ps: newProbeSet(tm.Dir, n, *absentN)},
		{label: "devfsd", m: dev, ps: newProbeSet(dev.Dir, n, *absentN)},
	}
	addHelper := func(label, b, helperBin string) error {
		m, err := mountDevfsd(b, harness.Options{})
		if err != nil {
			return err
		}
		h, err := startHelper(helperBin, m)
		if err != nil {
			return fmt.Errorf("%s: %w", label, err)
		}
		atExit(h.stop)
		targets = append(targets, &target{label: label, m: m, helper: h, ps: newProbeSet(m.Dir, n, *absentN)})
		return nil
	}
	if withHelper {
		if err := addHelper("devfsd+helper", "", bin); err != nil {
			return err
		}
	}
	if *oldBin != "" {
		m, err := mountDevfsd(*oldBin, harness.Options{})
		if err != nil {
			return err
		}
		targets = append(targets, &target{label: "devfsd-old", m: m, ps: newProbeSet(m.Dir, n, *absentN)})
		if withHelper {
			if err := addHelper("devfsd-old+helper", *oldBin, *oldBin); err != nil {
				return err
			}
		}
	}
	// Warm-up: the first start of each asks the loader about the absent
	// names and fills the kernel's caches; neither is what a start costs.
	for _, t := range targets {
		if _, _, err := runStarts(t.ps, 1, *phase/5); err != nil {
			return fmt.Errorf("%s: %w", t.label, err)
		}
	}
	res := map[int]map[string][]sample{}
	for rep := 0; rep < *reps; rep++ {
		for ti, th := range threads {
			if res[th] == nil {
				res[th] = map[string][]sample{}
			}
			k := (rep + ti) % len(targets)
			for _, t := range append(slices.Clone(targets[k:]), targets[:k]...) {
				s, err := measure(t, th)
				if err != nil {
					return fmt.Errorf("%s, %d threads: %w", t.label, th, err)
				}
				res[th][t.label] = append(res[th][t.label], s)
			}
		}
		fmt.Fprintf(os.Stderr, "probe: repetition %d of %d done (load %s)\n", rep+1, *reps, loadavg())
	}
	for _, t := range targets {
		if t.m.Pid() != 0 && !t.m.Alive() {
			return fmt.Errorf("%s died:\n%s", t.label, t.m.Output())
		}
	}
	reportProbes(w, threads, targets, res)
	return nil
}

// measure runs one phase of starts on t and reads what it cost.
func measure(t *target, threads int) (sample, error) {
	s := sample{cpuPerOp: -1, helperCPU: -1}
	var req0 map[string]uint64
	if t.m.Pid() != 0 {
		var err error
		if req0, err = t.m.Requests(); err != nil {
			return s, err
		}
	}
	cpu0 := settled(t.m)
	tk0 := ticks(t.m.Pid())
	var h0 time.Duration
	var sent0 uint64
	if t.helper != nil {
		h0, _ = schedCPU(t.helper.pid())
		st, err := t.helper.c.Stats(context.Background())
		if err != nil {
			return s, err
		}
		sent0 = st.Helper.Sent
	}
	n, el, err := runStarts(t.ps, threads, *phase)
	if err != nil {
		return s, err
	}
	cpu1, _ := t.m.CPU()
	s.starts, s.perSec = n, float64(n)/el.Seconds()
	if t.m.Pid() != 0 {
		s.cpuPerOp = float64(cpu1-cpu0) / float64(time.Microsecond) / float64(n)
		s.ticksDelta = ticks(t.m.Pid()) - tk0
		t.ticks += s.ticksDelta
		t.starts += n
		req1, err := t.m.Requests()
		if err != nil {
			return s, err
		}
		s.reqs = map[string]float64{}
		for op, v := range req1 {
			if d := v - req0[op]; d > 0 {
				s.reqs[op] = float64(d)
			}
		}
	}
	if t.helper != nil {
		h1, _ := schedCPU(t.helper.pid())
		s.helperCPU = float64(h1-h0) / float64(time.Microsecond) / float64(n)
		st, err := t.helper.c.Stats(context.Background())
		if err != nil {
			return s, err
		}
		s.helperLookups = float64(st.Helper.Sent - sent0)
		if !t.helper.alive() {
			return s, fmt.Errorf("the helper exited:\n%s", t.helper.out.String())
		}
	}
	return s, nil
}

func reportProbes(w io.Writer, threads []int, targets []*target, res map[int]map[string][]sample) {
	fmt.Fprintf(w, "\n## 1, 2: container start probes (open null/zero/full, 16 bytes of urandom, stat tty/ptmx/console, lstat pts/shm/fd/stdin, list the root (%d names), lstat %d absent names)\n\n", targets[0].ps.entries, len(targets[0].ps.absent))
	fmt.Fprintf(w, "%d repetitions of %v phases, backends interleaved (order rotated per repetition); daemon defaults (timeouts 1s, READDIRPLUS auto)\n\n", *reps, *phase)
	fmt.Fprintln(w, "| threads | backend | starts/s (median) | ×tmpfs (median of paired) | daemon CPU µs/start (schedstat, median) | daemon CPU µs/start (utime+stime, run total) | helper CPU µs/start | FUSE requests/start (run total, by op) |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---|")
	perSec := func(s sample) float64 { return s.perSec }
	for _, th := range threads {
		base := res[th]["tmpfs"]
		for _, t := range targets {
			ss := res[th][t.label]
			var tk uint64
			n := 0
			reqs := map[string]float64{}
			for _, s := range ss {
				tk += s.ticksDelta
				n += s.starts
				for op, v := range s.reqs {
					reqs[op] += v
				}
			}
			var hl float64
			for _, s := range ss {
				hl += s.helperLookups
			}
			tickCPU, rq := "n/a", "n/a"
			if t.m.Pid() != 0 {
				tickCPU = fmt.Sprintf("%.1f", float64(tk)*1e4/float64(n)) // a tick is 10 ms = 1e4 µs
				rq = opsString(reqs, float64(n))
			}
			if t.helper != nil {
				rq += fmt.Sprintf("; helper asked %.3f times a start", hl/float64(n))
			}
			fmt.Fprintf(w, "| %d | %s | %.0f | %s | %s | %s | %s | %s |\n", th, t.label, field(ss, perSec),
				num(paired(ss, base, perSec), "%.3f"), num(field(ss, func(s sample) float64 { return s.cpuPerOp }), "%.1f"),
				tickCPU, num(field(ss, func(s sample) float64 { return s.helperCPU }), "%.1f"), rq)
		}
	}
	pairs := [][2]string{{"devfsd+helper", "devfsd"}, {"devfsd", "devfsd-old"}, {"devfsd+helper", "devfsd-old+helper"}, {"devfsd-old+helper", "devfsd-old"}}
	var lines []string
	for _, p := range pairs {
		for _, th := range threads {
			a, b := res[th][p[0]], res[th][p[1]]
			if a == nil || b == nil {
				continue
			}
			lines = append(lines, fmt.Sprintf("| %s / %s | %d | %.3f | %s |", p[0], p[1], th, paired(a, b, perSec),
				num(paired(a, b, func(s sample) float64 { return s.cpuPerOp }), "%.3f")))
		}
	}
	if len(lines) > 0 {
		fmt.Fprintln(w, "\n| ratio | threads | starts/s, median of paired | daemon CPU/start, median of paired |")
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
	}
}

// opsString formats request counts per start, biggest first.
func opsString(reqs map[string]float64, starts float64) string {
	type kv struct {
		op string
		v  float64
	}
	var kvs []kv
	total := 0.0
	for op, v := range reqs {
		kvs = append(kvs, kv{op, v})
		total += v
	}
	sort.Slice(kvs, func(i, j int) bool { return kvs[i].v > kvs[j].v || kvs[i].v == kvs[j].v && kvs[i].op < kvs[j].op })
	parts := []string{fmt.Sprintf("%.2f:", total/starts)}
	for _, e := range kvs {
		parts = append(parts, fmt.Sprintf("%s %.2f", e.op, e.v/starts))
	}
	return strings.Join(parts, " ")
}

// helperProc is a running `devfsd helper`.
type helperProc struct {
	c    *client.Client // of the daemon's socket, for its helper counters
	cmd  *exec.Cmd
	out  *harness.SyncBuffer
	done chan struct{}
}

func (h *helperProc) pid() int { return h.cmd.Process.Pid }

func (h *helperProc) alive() bool {
	select {
	case <-h.done:
		return false
	default:
		return true
	}
}

func (h *helperProc) stop() {
	h.c.Close()
	if !h.alive() {
		return
	}
	h.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-h.done:
	case <-time.After(harness.TermDeadline):
		syscall.Kill(-h.pid(), syscall.SIGKILL)
		<-h.done
	}
}

// startHelper attaches `devfsd helper` with an empty devfsd.conf to m's
// daemon: it answers every lookup done, registering nothing. It returns
// once the daemon reports the helper attached.
func startHelper(bin string, m *harness.Mount) (*helperProc, error) {
	base, err := harness.Base()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(base, "empty-devfsd.conf")
	if err := os.WriteFile(conf, nil, 0o644); err != nil {
		return nil, err
	}
	sock := m.Dir + ".sock"
	cmd := exec.Command(bin, "helper", "-fg", "--config", conf, "--socket", sock, "--mount", m.Dir)
	cmd.Dir = "/"
	h := &helperProc{cmd: cmd, out: &harness.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = h.out, h.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := harness.ForkOnSpawner(cmd); err != nil {
		return nil, err
	}
	go func() { cmd.Wait(); close(h.done) }()
	c := client.New(sock)
	h.c = c
	attached := harness.Poll(10*time.Second, 5*time.Millisecond, func() bool {
		st, err := c.Stats(context.Background())
		return err == nil && st.Helper.Attached && int(st.Helper.Pid) == h.pid() || !h.alive()
	})
	if !attached || !h.alive() {
		h.stop()
		return nil, fmt.Errorf("devfsd helper did not attach:\n%s", h.out.String())
	}
	return h, nil
}

// execMiss is item 3: a daemon whose loader is an exec program, one per
// program kind, each miss a fresh name.
func execMiss(w io.Writer, bin string) error {
	base, err := harness.Base()
	if err != nil {
		return err
	}
	progs := []struct{ label, script string }{
		{"`devfsd ctl register` (through the socket)", fmt.Sprintf("#!/bin/sh\nexec %s ctl register \"$DEVNAME\" char 1 3\n", bin)},
		{"prints `register char NAME 1 3` (reference)", "#!/bin/sh\necho \"register char $DEVNAME 1 3\"\n"},
	}
	type run struct {
		label string
		m     *harness.Mount
		lat   []float64
		found int
	}
	var runs []*run
	for i, p := range progs {
		path := filepath.Join(base, fmt.Sprintf("loader-%d.sh", i))
		if err := os.WriteFile(path, []byte(p.script), 0o755); err != nil {
			return err
		}
		m, err := mountDevfsd("", harness.Options{DevfsdArgs: []string{"--loader=exec", "--exec-program=" + path}})
		if err != nil {
			return err
		}
		runs = append(runs, &run{label: p.label, m: m})
	}
	// Interleaved: one miss of each program in turn.
	for i := 0; i < *execN; i++ {
		for _, r := range runs {
			p := filepath.Join(r.m.Dir, fmt.Sprintf("exec%05d", i))
			var st unix.Stat_t
			t := time.Now()
			err := unix.Lstat(p, &st)
			d := time.Since(t)
			if err == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == unix.Mkdev(1, 3) {
				r.found++
			} else {
				fmt.Fprintf(os.Stderr, "probe: item 3: lstat %s: %v, mode %o\n", p, err, st.Mode)
			}
			r.lat = append(r.lat, float64(d)/float64(time.Microsecond))
		}
	}
	fmt.Fprintf(w, "\n## 3: a miss answered by an exec loader program (lstat of a fresh name; the program registers it as char 1:3)\n\n")
	fmt.Fprintln(w, "| loader program | misses | found | p10 µs | p50 µs | p90 µs | max µs |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
	for _, r := range runs {
		fmt.Fprintf(w, "| %s | %d | %d | %s |\n", r.label, len(r.lat), r.found, quantiles(r.lat))
	}
	for _, r := range runs {
		if k := strings.Count(r.m.Output(), "not sent in time"); k > 0 {
			fmt.Fprintf(w, "\n%s: the daemon logged \"kernel notifies not sent in time\" %d times in %d misses\n", r.label, k, len(r.lat))
		}
	}
	return nil
}

// socketRegister is item 4: POST /v1/register from one keep-alive client,
// then lstat on the mount until it sees the name.
func socketRegister(w io.Writer) error {
	type cs struct {
		label      string
		missFirst  bool
		post, seen []float64
		polls      []float64
	}
	type daemon struct {
		label      string
		m          *harness.Mount
		c          *client.Client
		cases      []*cs
		gets       []float64 // GET /v1/stat of an existing node: a request with no change, the socket's floor
		req0, req1 map[string]uint64
	}
	ctx := context.Background()
	var ds []*daemon
	for _, b := range []struct{ label, bin string }{{"devfsd", ""}, {"devfsd-old", *oldBin}} {
		if b.label == "devfsd-old" && b.bin == "" {
			continue
		}
		m, err := mountDevfsd(b.bin, harness.Options{})
		if err != nil {
			return err
		}
		c := client.New(m.Dir + ".sock")
		defer c.Close()
		if _, err := c.Stats(ctx); err != nil { // dial once: the connection is kept
			return err
		}
		ds = append(ds, &daemon{label: b.label, m: m, c: c,
			cases: []*cs{{label: "fresh name"}, {label: "name whose miss was just cached (an lstat saw ENOENT first)", missFirst: true}}})
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	for _, d := range ds {
		var err error
		if d.req0, err = d.m.Requests(); err != nil {
			return err
		}
	}
	// Interleaved: each sample on every daemon, in an order that
	// alternates from one sample to the next.
	for i := 0; i < *regN; i++ {
		for j := range ds {
			d := ds[(i+j)%len(ds)]
			t := time.Now()
			if _, err := d.c.Stat(ctx, "null"); err != nil {
				return err
			}
			d.gets = append(d.gets, us(time.Since(t)))
			for ci, k := range d.cases {
				post, seen, polls, err := registerOnce(d.c, d.m.Dir, fmt.Sprintf("reg%d-%05d", ci, i), k.missFirst)
				if err != nil {
					return fmt.Errorf("%s: %w", d.label, err)
				}
				k.post, k.seen, k.polls = append(k.post, us(post)), append(k.seen, us(seen)), append(k.polls, float64(polls))
			}
		}
	}
	for _, d := range ds {
		var err error
		if d.req1, err = d.m.Requests(); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "\n## 4: register through the socket (POST /v1/register, one keep-alive client) until lstat on the mount sees it\n\n")
	fmt.Fprintln(w, "| daemon | case | samples | POST alone p50 µs | POST p90 µs | until lstat sees it p50 µs | p90 µs | max µs | lstats (median, max) |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, d := range ds {
		for _, k := range d.cases {
			sort.Float64s(k.post)
			sort.Float64s(k.seen)
			fmt.Fprintf(w, "| %s | %s | %d | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f, %.0f |\n", d.label, k.label, len(k.seen),
				q(k.post, 0.5), q(k.post, 0.9), q(k.seen, 0.5), q(k.seen, 0.9), k.seen[len(k.seen)-1], median(k.polls), slices.Max(k.polls))
		}
	}
	fmt.Fprintln(w)
	for _, d := range ds {
		sort.Float64s(d.gets)
		reqs := map[string]float64{}
		for op, v := range d.req1 {
			if x := v - d.req0[op]; x > 0 {
				reqs[op] = float64(x)
			}
		}
		fmt.Fprintf(w, "- %s: for scale, GET /v1/stat?path=null on the same connection, interleaved (a request that changes nothing): p50 %.0f µs, p90 %.0f µs, %d samples; "+
			"FUSE requests per registration, both cases together (the cached-miss case's first lstat included) %s\n",
			d.label, q(d.gets, 0.5), q(d.gets, 0.9), len(d.gets), opsString(reqs, float64(2**regN)))
	}
	return nil
}

// registerOnce registers name (char 1:3) in the mount at dir through c,
// having first looked it up (a cached miss) if missFirst, then lstats it
// until it is seen: how long the POST took, how long until the lstat saw
// the node (from the POST's start), and how many lstats that took.
func registerOnce(c *client.Client, dir, name string, missFirst bool) (post, seen time.Duration, polls int, err error) {
	major, minor := int64(1), int64(3)
	p := filepath.Join(dir, name)
	var st unix.Stat_t
	if missFirst {
		if err := unix.Lstat(p, &st); err != unix.ENOENT {
			return 0, 0, 0, fmt.Errorf("lstat %s before registering: %v", p, err)
		}
	}
	t0 := time.Now()
	if _, err := c.Register(context.Background(), wire.RegisterRequest{Path: name, Type: "char", Major: &major, Minor: &minor, Mode: "0666"}); err != nil {
		return 0, 0, 0, fmt.Errorf("register %s: %w", name, err)
	}
	t1 := time.Now()
	deadline := t1.Add(5 * time.Second)
	for {
		polls++
		err := unix.Lstat(p, &st)
		if err == nil {
			break
		}
		if err != unix.ENOENT || time.Now().After(deadline) {
			return 0, 0, 0, fmt.Errorf("lstat %s after registering: %v (%d polls)", p, err, polls)
		}
	}
	return t1.Sub(t0), time.Since(t0), polls, nil
}

// rxLine matches go-fuse's debug line of a request: "rx 12: OPENDIR n1 ...".
var rxLine = regexp.MustCompile(`"msg":"rx [0-9]+: ([A-Z_]+)`)

// opCount counts every FUSE request of n single-threaded starts from
// go-fuse's debug log, on a devfsd mount of its own (and one with the
// empty helper attached).
func opCount(w io.Writer, bin string, n int) error {
	fmt.Fprintf(w, "\n## FUSE requests per start, every opcode (go-fuse debug log of a mount of its own, %d starts on 1 thread after a warm-up)\n\n", n)
	for _, withHelper := range []bool{false, true} {
		m, err := mountDevfsd("", harness.Options{DevfsdArgs: []string{"--debug", "--log-level=debug", "--log-format=json"}})
		if err != nil {
			return err
		}
		label := "devfsd"
		var h *helperProc
		if withHelper {
			if h, err = startHelper(bin, m); err != nil {
				return err
			}
			label = "devfsd+helper"
		}
		names, err := os.ReadDir(m.Dir)
		if err != nil {
			return err
		}
		ps := newProbeSet(m.Dir, len(names), *absentN)
		buf := make([]byte, 32<<10)
		for range 3 {
			if err := ps.start(buf); err != nil {
				return err
			}
		}
		// The log is written asynchronously: wait until it is quiet.
		quiet := func() int {
			prev := -1
			harness.Poll(2*time.Second, 20*time.Millisecond, func() bool {
				cur := len(m.Output())
				ok := cur == prev
				prev = cur
				return ok
			})
			return prev
		}
		from := quiet()
		t := time.Now()
		for range n {
			if err := ps.start(buf); err != nil {
				return err
			}
		}
		el := time.Since(t)
		quiet()
		counts := map[string]float64{}
		for _, mt := range rxLine.FindAllStringSubmatch(m.Output()[from:], -1) {
			counts[mt[1]]++
		}
		fmt.Fprintf(w, "- %s: %s per start (%.0f µs a start with debug logging)\n", label, opsString(counts, float64(n)),
			float64(el)/float64(time.Microsecond)/float64(n))
		if h != nil {
			h.stop()
		}
		m.Close()
	}
	return nil
}

// pprofAddr matches the test hook's log line naming its address.
var pprofAddr = regexp.MustCompile(`"msg":"TEST HOOK: pprof served".*"addr":"([^"]+)"`)

// profile takes a CPU profile of a devfsd daemon serving starts.
func profile(w io.Writer, bin string) error {
	os.Setenv("DEVFSD_TEST_PPROF", "127.0.0.1:0")
	m, err := mountDevfsd("", harness.Options{})
	os.Unsetenv("DEVFSD_TEST_PPROF")
	if err != nil {
		return err
	}
	label := "devfsd"
	if *pprofHelp {
		h, err := startHelper(bin, m)
		if err != nil {
			return err
		}
		defer h.stop()
		label = "devfsd+helper"
	}
	var addr string
	if !harness.Poll(5*time.Second, 10*time.Millisecond, func() bool {
		mt := pprofAddr.FindStringSubmatch(m.Output())
		if mt != nil {
			addr = mt[1]
		}
		return mt != nil
	}) {
		return fmt.Errorf("the daemon did not say where pprof is served (built without the test hooks?):\n%s", m.Output())
	}
	names, err := os.ReadDir(m.Dir)
	if err != nil {
		return err
	}
	ps := newProbeSet(m.Dir, len(names), *absentN)
	if _, _, err := runStarts(ps, 1, 200*time.Millisecond); err != nil {
		return err
	}
	var c *client.Client
	switch *pprofOf {
	case "starts":
	case "register":
		c = client.New(m.Dir + ".sock")
		defer c.Close()
	default:
		return fmt.Errorf("-pprof-of %q: starts or register", *pprofOf)
	}
	type result struct {
		body []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, *pprofSecs))
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(bufio.NewReader(resp.Body))
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("pprof: %s: %s", resp.Status, b)
		}
		got <- result{b, err}
	}()
	req0, _ := m.Requests()
	cpu0, _ := m.CPU()
	d := time.Duration(*pprofSecs)*time.Second + 300*time.Millisecond
	var n int
	var el time.Duration
	var posts []float64
	if c == nil {
		n, el, err = runStarts(ps, *pprofTh, d)
	} else {
		label += ", registering fresh names through the socket (1 client) and lstat until seen"
		t := time.Now()
		for ; time.Since(t) < d; n++ {
			post, _, _, err := registerOnce(c, m.Dir, fmt.Sprintf("prof%06d", n), false)
			if err != nil {
				return err
			}
			posts = append(posts, float64(post)/float64(time.Microsecond))
		}
		el = time.Since(t)
	}
	if err != nil {
		return err
	}
	cpu1, _ := m.CPU()
	req1, _ := m.Requests()
	r := <-got
	if r.err != nil {
		return r.err
	}
	if err := os.WriteFile(*pprofFile, r.body, 0o644); err != nil {
		return err
	}
	reqs := map[string]float64{}
	for op, v := range req1 {
		if d := v - req0[op]; d > 0 {
			reqs[op] = float64(d)
		}
	}
	what := fmt.Sprintf("%d threads, %d starts", *pprofTh, n)
	if c != nil {
		what = fmt.Sprintf("%d registrations (POST p50 %.0f µs)", n, median(posts))
	}
	fmt.Fprintf(w, "\n## CPU profile\n\n%s, %s in %v (%.0f/s), daemon CPU %.1f µs each, FUSE requests each %s; profile in %s (go tool pprof -top %s)\n",
		label, what, el.Round(time.Millisecond), float64(n)/el.Seconds(),
		float64(cpu1-cpu0)/float64(time.Microsecond)/float64(n), opsString(reqs, float64(n)), *pprofFile, *pprofFile)
	return nil
}

// settled waits until the server has used no CPU for three 2 ms polls
// (what it did before, such as answering a metrics scrape, is over), for at
// most a second, and returns its CPU time then.
func settled(m *harness.Mount) time.Duration {
	prev, _ := m.CPU()
	if m.Pid() == 0 {
		return prev
	}
	deadline := time.Now().Add(time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for still := 0; still < 3 && time.Now().Before(deadline); {
		<-tick.C
		cur, _ := m.CPU()
		if cur == prev {
			still++
		} else {
			still = 0
		}
		prev = cur
	}
	return prev
}

// ticks is utime+stime of pid from /proc/PID/stat, in clock ticks (10 ms).
func ticks(pid int) uint64 {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if errors.Join(err1, err2) != nil {
		return 0
	}
	return ut + st
}

// schedCPU sums the run time of pid's threads (schedstat, ns).
func schedCPU(pid int) (time.Duration, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tids, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, t := range tids {
		b, err := os.ReadFile(filepath.Join(dir, t.Name(), "schedstat"))
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += ns
		}
	}
	return time.Duration(sum), nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// q is the p-quantile of sorted xs (nearest rank below).
func q(xs []float64, p float64) float64 { return xs[int(p*float64(len(xs)-1))] }

func quantiles(xs []float64) string {
	s := slices.Clone(xs)
	sort.Float64s(s)
	return fmt.Sprintf("%.0f | %.0f | %.0f | %.0f", q(s, 0.1), median(s), q(s, 0.9), s[len(s)-1])
}

func field(ss []sample, f func(sample) float64) float64 {
	var xs []float64
	for _, s := range ss {
		if v := f(s); v >= 0 {
			xs = append(xs, v)
		}
	}
	return median(xs)
}

// paired is the median over repetitions of f(a[i])/f(b[i]).
func paired(a, b []sample, f func(sample) float64) float64 {
	var rs []float64
	for i := range min(len(a), len(b)) {
		if x, y := f(a[i]), f(b[i]); x >= 0 && y > 0 {
			rs = append(rs, x/y)
		}
	}
	return median(rs)
}

func num(v float64, format string) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}
