// Command fusebench measures the FUSE benchmarks of issue 4 against tmpfs,
// the bare go-fuse tree (barefs), the go-fuse floor (rawfloor) and devfsd,
// all mounted in the same run:
//
//	stat of existing names, entry/attr timeout 0 and 1 s (cold and warm)
//	stat of missing names, negative timeout 0 and 1 s
//	readdir of 10,000 and 100,000 entries (READDIRPLUS on and off)
//	ls -l: readdir + lstat of 10,000 (READDIRPLUS on and off)
//	mknod+unlink churn
//
// each with 1 and 2 threads. Every repetition mounts every backend afresh
// for every case, in an order rotated from one repetition to the next
// (backends interleaved), and the report gives medians over repetitions of
// operations per second, FUSE requests per operation and server CPU
// (run time of its threads, Mount.CPU) per request, with ratios to barefs in the
// same run. Populated directories are made server-side before mounting
// (barefs: its -populate flag; devfsd: the DEVFSD_TEST_POPULATE hook), so
// "cold" means the kernel has never seen a name: each first lstat is one
// LOOKUP. tmpfs has no cache apart from itself: always "warm". (A
// backend that could only be populated through the mount would have the
// entry timeout waited out, so that each name is revalidated with one
// LOOKUP.) Requests per operation count the requests devfsd answers and
// counts (countedOps), for barefs too. CPU time is in nanoseconds
// (schedstat), but a short phase is still noisy: use the full sizes. The
// cases whose pass leaves the state as it found it (the warm stat passes,
// readdir) repeat it within one measured phase until the phase lasts
// minPhase (200 ms). The phase starts once the server's CPU time has
// settled after the request counts were read (settled).
//
// rawfloor (barefs -raw, harness.RawFloor) is a go-fuse raw server that
// answers LOOKUP and GETATTR of the populated tree computed from the request,
// doing no work at all, with barefs's mount options: its server CPU per
// request is the floor under any go-fuse raw server (go-fuse's request loop
// and the kernel alone), so "CPU ×barefs" of its rows bounds what devfsd can
// reach relative to barefs. It serves only stats: it runs in the stat hit and
// stat miss cases and is skipped, silently, in readdir, ls -l and churn.
//
// Last, unless -miss=false: the latency of a miss the built-in loader
// answers (lstat of names it provides, each a real miss on a fresh mount).
//
// With -devfsd-old PATH, a devfsd binary built from another tree (an older
// commit) is measured too, as the backend "devfsd-old" (and its READDIRPLUS
// variants), interleaved with the rest, and the report ends with the ratios
// of devfsd to devfsd-old: per case, the median over repetitions of the
// ratio within each repetition (paired), and the ratio of the medians.
//
//	go run ./test/bench/fusebench [-quick] [-reps 5] [-backends tmpfs,barefs,rawfloor,devfsd] [-devfsd-old PATH]
//
// Run it from the repository (it builds barefs and devfsd with the
// harness). Figures are only comparable within one run.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/devfsd/devfsd/test/harness"
	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fusebench:", err)
		harness.Cleanup()
		os.Exit(1)
	}
	if err := harness.Cleanup(); err != nil {
		fmt.Fprintln(os.Stderr, "fusebench:", err)
		os.Exit(1)
	}
}

// variant is one column of the report: a backend with a READDIRPLUS choice.
type variant struct {
	label string
	b     harness.Backend
	rdp   string // "" default, "on", "off"
	// bin is the devfsd binary of this variant (DEVFSD_BIN while it is
	// mounted), "" for the harness's own (DEVFSD_BIN as fusebench was
	// started with, or cmd/devfsd of this tree).
	bin  string
	dirs bool // only for the readdir and ls -l cases
	stat bool // only for the stat cases (rawfloor serves nothing else)
}

// bcase is one benchmark: mount options, an unmeasured preparation, and
// the measured part, which returns the number of operations it did.
type bcase struct {
	name    string
	timeout time.Duration // entry and attr timeout
	neg     time.Duration
	pop     int  // files in directory "d", made before mounting
	dirs    bool // a readdir case: also run the READDIRPLUS variants
	stat    bool // a stat case (lstat of names in "d" only): rawfloor runs too
	prep    func(dir string, threads int) error
	run     func(dir string, threads int) (int, error)
	// repeat: run may be repeated within one measured phase, as it leaves
	// the state as it found it (a warm pass, a listing), until the phase
	// lasts minPhase, so that a pass of a few milliseconds is not measured
	// alone: one pass of a warm stat or of readdir 10000 takes 5-20 ms,
	// where a scheduling hiccup moves the figure by 10-20%.
	repeat bool
}

// minPhase is how long a measured phase of a repeat case lasts at least
// (0 in -quick runs). It stays well under the 1 s timeouts of the warm
// cases, whose cached entries must outlive the phase.
var minPhase = 200 * time.Millisecond

type sample struct {
	opsPerSec  float64
	reqPerOp   float64 // -1: unknown
	cpuPerReq  float64 // µs; -1: unknown
	rssPerNode float64
}

func run(w io.Writer) error {
	quick := flag.Bool("quick", false, "small sizes, one repetition: a smoke test")
	reps := flag.Int("reps", 5, "repetitions (medians are taken over them)")
	backends := flag.String("backends", "tmpfs,barefs,rawfloor,devfsd", "backends to measure (barefs is the baseline and always runs; rawfloor runs only in the stat cases)")
	threadsFlag := flag.String("threads", "1,2", "thread counts")
	only := flag.String("cases", "", "cases to run, by parts of their names separated by ';' (\"churn;ls -l\"; default all)")
	missFlag := flag.Bool("miss", true, "measure the latency of a miss the built-in loader answers (devfsd)")
	oldBin := flag.String("devfsd-old", "", "a devfsd binary of another tree, measured as backend devfsd-old beside devfsd (which must be among -backends)")
	flag.Parse()

	n, big := 10000, 100000
	if *quick {
		n, big = 300, 1000
		minPhase = 0
		if !isSet("reps") {
			*reps = 1
		}
	}
	var threads []int
	for _, s := range strings.Split(*threadsFlag, ",") {
		k, err := strconv.Atoi(s)
		if err != nil || k < 1 {
			return fmt.Errorf("bad -threads %q", *threadsFlag)
		}
		threads = append(threads, k)
	}

	var vs []variant
	want := strings.Split(*backends, ",")
	if !slices.Contains(want, "barefs") {
		want = append(want, "barefs")
	}
	if *oldBin != "" {
		if !slices.Contains(want, "devfsd") {
			return fmt.Errorf("-devfsd-old needs devfsd among -backends (%q)", *backends)
		}
		abs, err := filepath.Abs(*oldBin)
		if err != nil {
			return err
		}
		if st, err := os.Stat(abs); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("-devfsd-old %q: not an executable file", *oldBin)
		}
		*oldBin = abs
		want = append(want, oldLabel)
	}
	for _, name := range want {
		bin := ""
		if name == oldLabel {
			name, bin = "devfsd", *oldBin
		}
		b, err := harness.ByName(name)
		if err != nil {
			return err
		}
		// Probe: a backend that cannot run yet is left out, saying why.
		m, err := start(b, bin, harness.Options{})
		if harness.IsUnavailable(err) {
			fmt.Fprintf(os.Stderr, "fusebench: leaving out %s: %v\n", name, err)
			continue
		}
		if err != nil {
			return err
		}
		m.Close()
		if b == harness.RawFloor() {
			vs = append(vs, variant{label: name, b: b, stat: true})
			continue
		}
		label := name
		if bin != "" {
			label = oldLabel
		}
		vs = append(vs, variant{label: label, b: b, bin: bin})
		if b.FUSE() {
			// The READDIRPLUS choice matters only to readdir and
			// ls -l; the default is the backend's own.
			vs = append(vs, variant{label: label + "/rdp-off", b: b, rdp: "off", dirs: true, bin: bin})
			if name == "barefs" {
				// go-fuse's default is on: the same as "barefs".
			} else {
				vs = append(vs, variant{label: label + "/rdp-on", b: b, rdp: "on", dirs: true, bin: bin})
			}
		}
	}

	cases := allCases(n, big)
	if *only != "" {
		var sel []bcase
		for _, c := range cases {
			for _, part := range strings.Split(*only, ";") {
				if part != "" && strings.Contains(c.name, part) {
					sel = append(sel, c)
					break
				}
			}
		}
		cases = sel
	}

	// results[case/threads][variant] = samples
	results := map[string]map[string][]sample{}
	var keys []string
	for rep := 0; rep < *reps; rep++ {
		for _, c := range cases {
			for _, th := range threads {
				key := fmt.Sprintf("%s, %d thread", c.name, th)
				if th > 1 {
					key += "s"
				}
				if results[key] == nil {
					results[key] = map[string][]sample{}
					keys = append(keys, key)
				}
				order := rotate(vs, rep)
				for _, v := range order {
					if v.dirs && !c.dirs || v.stat && !c.stat {
						continue
					}
					s, err := measure(c, v, th)
					if err != nil {
						return fmt.Errorf("%s on %s: %w", key, v.label, err)
					}
					results[key][v.label] = append(results[key][v.label], s)
				}
			}
		}
		fmt.Fprintf(os.Stderr, "fusebench: repetition %d of %d done\n", rep+1, *reps)
	}
	report(w, keys, vs, results, *reps, n, big)
	if *oldBin != "" {
		reportOld(w, keys, vs, results, *oldBin)
	}
	if *missFlag && slices.ContainsFunc(vs, func(v variant) bool { return v.label == "devfsd" }) {
		if err := missLatency(w, *reps); err != nil {
			return fmt.Errorf("miss latency: %w", err)
		}
	}
	return nil
}

// loaderNames are names the built-in loader provides, each from a
// different module (modload/builtin's catalogue), so that on a fresh mount
// each lstat is a real miss: LOOKUP, in-flight record, load, registration,
// answer.
var loaderNames = append(strings.Fields("loop0 tty1 ttyS0 kvm vhost-net vhost-vsock fuse cuse uinput fb0 nvidia0 dsp "+
	"i2c-0 watchdog hwrng btrfs-control autofs uhid rfkill ppp net input dri snd mapper vfio"), sdNames()...)

func sdNames() []string {
	var r []string
	for c := 'a'; c <= 'z'; c++ {
		r = append(r, "sd"+string(c))
	}
	return r
}

// missLatency: on a fresh devfsd mount per repetition, lstat each of
// loaderNames once, timing each call; the daemon's load counter must have
// grown by one per name (each was a real miss answered by the loader).
func missLatency(w io.Writer, reps int) error {
	var lat []float64 // µs
	loads := 0
	for rep := 0; rep < reps; rep++ {
		m, err := harness.Start(harness.Devfsd(), harness.Options{Stats: true})
		if err != nil {
			return err
		}
		const found = `devfsd_loads_total{loader="builtin",result="found"}`
		m0, err := m.Metrics()
		if err != nil {
			m.Close()
			return err
		}
		for _, name := range loaderNames {
			var st unix.Stat_t
			t := time.Now()
			err := unix.Lstat(filepath.Join(m.Dir, name), &st)
			d := time.Since(t)
			if err != nil {
				m.Close()
				return fmt.Errorf("lstat %s: %v", name, err)
			}
			lat = append(lat, float64(d)/float64(time.Microsecond))
		}
		m1, err := m.Metrics()
		m.Close()
		if err != nil {
			return err
		}
		loads += int(m1[found] - m0[found])
	}
	sort.Float64s(lat)
	q := func(p float64) float64 { return lat[int(p*float64(len(lat)-1))] }
	fmt.Fprintf(w, "\nmiss answered by the built-in loader (devfsd, fresh mount per repetition, lstat of %d names from %d different modules each): "+
		"%d lstats, %d loads that found the name; latency µs: median %.0f, p10 %.0f, p90 %.0f, max %.0f\n",
		len(loaderNames), len(loaderNames), len(lat), loads, median(lat), q(0.1), q(0.9), lat[len(lat)-1])
	return nil
}

func isSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// oldLabel is the backend name of -devfsd-old's binary.
const oldLabel = "devfsd-old"

// harnessBin is DEVFSD_BIN as fusebench was started with ("" if unset).
var harnessBin, harnessBinSet = os.LookupEnv("DEVFSD_BIN")

// start is harness.Start of b, with bin (if not "") as the devfsd binary:
// the harness's devfsd backend reads DEVFSD_BIN when it mounts, so it is
// set for this mount and put back as fusebench found it afterwards.
// Mounts are made one at a time, from this goroutine only.
func start(b harness.Backend, bin string, o harness.Options) (*harness.Mount, error) {
	if bin != "" {
		os.Setenv("DEVFSD_BIN", bin)
		defer func() {
			if harnessBinSet {
				os.Setenv("DEVFSD_BIN", harnessBin)
			} else {
				os.Unsetenv("DEVFSD_BIN")
			}
		}()
	}
	return harness.Start(b, o)
}

func rotate(vs []variant, k int) []variant {
	if len(vs) == 0 {
		return nil
	}
	k %= len(vs)
	return append(slices.Clone(vs[k:]), vs[:k]...)
}

// measure mounts v afresh, prepares, and times c.run.
func measure(c bcase, v variant, threads int) (sample, error) {
	o := harness.Options{
		Timeouts:        true,
		EntryTimeout:    c.timeout,
		AttrTimeout:     c.timeout,
		NegativeTimeout: c.neg,
		ReaddirPlus:     v.rdp,
		Stats:           true,
		Populate:        []harness.Populate{{Dir: "d", N: c.pop}},
	}
	m, err := start(v.b, v.bin, o)
	if err != nil {
		return sample{}, err
	}
	defer m.Close()
	s := sample{reqPerOp: -1, cpuPerReq: -1, rssPerNode: -1}
	if rss, err := m.RSS(); err == nil && m.Pid() != 0 && c.pop > 0 {
		s.rssPerNode = float64(rss) / float64(c.pop)
	}
	if !m.ColdPopulate && c.pop > 0 && c.timeout > 0 {
		// Populated through the mount: the kernel has the entries
		// cached. Let them expire, so that they are revalidated (one
		// LOOKUP each) as a cold tree's are looked up.
		time.Sleep(c.timeout + 50*time.Millisecond)
	}
	dir := filepath.Join(m.Dir, "d")
	if c.prep != nil {
		if err := c.prep(dir, threads); err != nil {
			return s, err
		}
	}
	req0, reqErr := m.Requests()
	// Reading the counts costs the server CPU (devfsd: a /metrics scrape
	// over its control socket; barefs: a JSON dump on SIGUSR1) that must
	// not run into the measured phase, where it would be charged to the
	// phase and, with 2 threads on 2 CPUs, take a CPU from the client.
	cpu0 := settled(m)
	start := time.Now()
	ops, err := c.run(dir, threads)
	for c.repeat && err == nil && time.Since(start) < minPhase {
		var more int
		more, err = c.run(dir, threads)
		ops += more
	}
	el := time.Since(start)
	if err != nil {
		return s, err
	}
	cpu1, _ := m.CPU()
	s.opsPerSec = float64(ops) / el.Seconds()
	if reqErr == nil {
		req1, err := m.Requests()
		if err == nil {
			var d uint64
			for op, v := range req1 {
				if countedOps[op] {
					d += v - req0[op]
				}
			}
			s.reqPerOp = float64(d) / float64(ops)
			if d > 0 {
				s.cpuPerReq = float64(cpu1-cpu0) / float64(time.Microsecond) / float64(d)
			}
		}
	}
	if !m.Alive() {
		return s, fmt.Errorf("%s server died:\n%s", v.label, m.Output())
	}
	return s, nil
}

// countedOps are the requests counted in requests/op, for every backend:
// those devfsd answers and counts (its metric
// devfsd_fuse_request_duration_seconds_count{op}). Requests without an
// answer (FORGET, RELEASE, RELEASEDIR, ...) are left out of both sides.
var countedOps = map[string]bool{}

func init() {
	for _, op := range strings.Fields("LOOKUP GETATTR SETATTR MKNOD MKDIR SYMLINK READLINK LINK UNLINK RMDIR RENAME ACCESS " +
		"STATFS OPEN CREATE READ WRITE FALLOCATE OPENDIR READDIR READDIRPLUS") {
		countedOps[op] = true
	}
}

func allCases(n, big int) []bcase {
	statAll := func(names func(i int) string, count int, wantErr error) func(string, int) (int, error) {
		return func(dir string, threads int) (int, error) {
			return count, parallel(threads, count, func(i int) error {
				var st unix.Stat_t
				err := unix.Lstat(filepath.Join(dir, names(i)), &st)
				if err != wantErr && !(wantErr == nil && err == nil) {
					return fmt.Errorf("lstat %s: %v, want %v", names(i), err, wantErr)
				}
				return nil
			})
		}
	}
	prepOf := func(f func(string, int) (int, error)) func(string, int) error {
		return func(dir string, th int) error { _, err := f(dir, th); return err }
	}
	miss := func(i int) string { return fmt.Sprintf("m%07d", i) }
	hit := statAll(harness.PopulateName, n, nil)
	missing := statAll(miss, n, unix.ENOENT)
	s := time.Second
	return []bcase{
		{name: "stat hit, timeouts 0", timeout: 0, pop: n, stat: true, prep: prepOf(hit), run: hit},
		{name: "stat hit, timeouts 1s, cold", timeout: s, pop: n, stat: true, run: hit},
		{name: "stat hit, timeouts 1s, warm", timeout: s, pop: n, stat: true, prep: prepOf(hit), run: hit, repeat: true},
		{name: "stat miss, negative 0", timeout: s, pop: 0, stat: true, prep: prepOf(missing), run: missing},
		{name: "stat miss, negative 1s, warm", timeout: s, neg: s, pop: 0, stat: true, prep: prepOf(missing), run: missing, repeat: true},
		{name: fmt.Sprintf("readdir %d", n), timeout: s, pop: n, dirs: true, run: readdir(n, false), repeat: true},
		{name: fmt.Sprintf("readdir %d", big), timeout: s, pop: big, dirs: true, run: readdir(big, false), repeat: true},
		{name: fmt.Sprintf("ls -l %d", n), timeout: s, pop: n, dirs: true, run: readdir(n, true)},
		{name: "mknod+unlink churn", timeout: s, pop: 0, run: churn(n)},
	}
}

// parallel runs f(0..count-1) split over threads OS threads.
func parallel(threads, count int, f func(i int) error) error {
	var wg sync.WaitGroup
	errs := make([]error, threads)
	for t := 0; t < threads; t++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for i := t; i < count; i += threads {
				if err := f(i); err != nil {
					errs[t] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// readdir lists the directory once per thread (threads list concurrently)
// with getdents64, and with stat also lstats every name (ls -l).
func readdir(want int, stat bool) func(string, int) (int, error) {
	return func(dir string, threads int) (int, error) {
		err := parallel(threads, threads, func(int) error {
			fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			buf := make([]byte, 64<<10)
			got := 0
			for {
				k, err := unix.Getdents(fd, buf)
				if err != nil {
					return err
				}
				if k == 0 {
					break
				}
				b := buf[:k]
				for len(b) > 0 {
					reclen := int(b[16]) | int(b[17])<<8
					name := b[19:reclen]
					if i := slices.Index(name, 0); i >= 0 {
						name = name[:i]
					}
					b = b[reclen:]
					if s := string(name); s == "." || s == ".." {
						continue
					}
					got++
					if stat {
						var st unix.Stat_t
						if err := unix.Fstatat(fd, string(name), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
							return err
						}
					}
				}
			}
			if got != want {
				return fmt.Errorf("listed %d entries, want %d", got, want)
			}
			return nil
		})
		return want * threads, err
	}
}

// churn does mknod+unlink of fresh names, count cycles over all threads.
func churn(count int) func(string, int) (int, error) {
	return func(dir string, threads int) (int, error) {
		return count, parallel(threads, count, func(i int) error {
			p := filepath.Join(dir, fmt.Sprintf("c%07d", i))
			if err := unix.Mknod(p, unix.S_IFREG|0o644, 0); err != nil {
				return err
			}
			return unix.Unlink(p)
		})
	}
}

// settled waits until the server has used no CPU for a while (what it
// did before, such as answering a stats read, is over), for at most a
// second, and returns its CPU time then.
func settled(m *harness.Mount) time.Duration {
	const quiet = 3 // consecutive 2 ms polls without CPU use
	prev, _ := m.CPU()
	deadline := time.Now().Add(time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for still := 0; still < quiet && time.Now().Before(deadline); {
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

func field(ss []sample, f func(sample) float64) float64 {
	var xs []float64
	for _, s := range ss {
		if v := f(s); v >= 0 {
			xs = append(xs, v)
		}
	}
	return median(xs)
}

func num(v float64, format string) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

func ratio(v, base float64) string {
	if v < 0 || base <= 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", v/base)
}

func report(w io.Writer, keys []string, vs []variant, res map[string]map[string][]sample, reps, n, big int) {
	load, _ := os.ReadFile("/proc/loadavg")
	var uts unix.Utsname
	unix.Uname(&uts)
	fmt.Fprintf(w, "fusebench: %s, Linux %s, %d CPUs, load average at end %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"),
		strings.TrimRight(string(uts.Release[:]), "\x00"), runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(w, "medians of %d repetitions; fresh mount per backend per case per repetition; ratios to barefs (higher ops/s is better, lower CPU is better)\n\n", reps)
	fmt.Fprintln(w, "| case | backend | ops/s | ×barefs | requests/op | server CPU µs/request | CPU ×barefs |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
	for _, k := range keys {
		base := res[k]["barefs"]
		bOps := field(base, func(s sample) float64 { return s.opsPerSec })
		bCPU := field(base, func(s sample) float64 { return s.cpuPerReq })
		for _, v := range vs {
			ss, ok := res[k][v.label]
			if !ok {
				continue
			}
			ops := field(ss, func(s sample) float64 { return s.opsPerSec })
			rq := field(ss, func(s sample) float64 { return s.reqPerOp })
			cpu := field(ss, func(s sample) float64 { return s.cpuPerReq })
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", k, v.label, num(ops, "%.0f"), ratio(ops, bOps),
				num(rq, "%.2f"), num(cpu, "%.1f"), ratio(cpu, bCPU))
		}
	}
	// Server memory per populated node, from the resident set right after
	// mounting a populated tree: the difference between the big and the
	// small readdir trees, per extra node.
	fmt.Fprintln(w)
	small, large := fmt.Sprintf("readdir %d, 1 thread", n), fmt.Sprintf("readdir %d, 1 thread", big)
	for _, v := range vs {
		if v.dirs || !v.b.FUSE() {
			continue
		}
		a := field(res[small][v.label], func(s sample) float64 { return s.rssPerNode * float64(n) })
		b := field(res[large][v.label], func(s sample) float64 { return s.rssPerNode * float64(big) })
		if a > 0 && b > 0 {
			fmt.Fprintf(w, "%s: server RSS %.1f MiB with %d nodes, %.1f MiB with %d: %.0f bytes per extra node\n",
				v.label, a/(1<<20), n, b/(1<<20), big, (b-a)/float64(big-n))
		}
	}
}

// reportOld gives, for each case and each devfsd variant measured with its
// devfsd-old twin, the ratios of devfsd to devfsd-old: the median of the
// ratios paired by repetition (both were measured in the same repetition,
// one beside the other in the rotated order) and the ratio of the medians,
// for operations per second and for server CPU per request.
func reportOld(w io.Writer, keys []string, vs []variant, res map[string]map[string][]sample, oldBin string) {
	fmt.Fprintf(w, "\ndevfsd (this tree) against devfsd-old (%s), same run: new/old; ops/s above 1 is faster, CPU below 1 is cheaper\n\n", oldBin)
	fmt.Fprintln(w, "| case | backend | ops/s new/old, median of paired | ops/s new/old, of medians | CPU/request new/old, median of paired | CPU/request new/old, of medians |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
	paired := func(a, b []sample, f func(sample) float64) float64 {
		var rs []float64
		for i := range min(len(a), len(b)) {
			if x, y := f(a[i]), f(b[i]); x >= 0 && y > 0 {
				rs = append(rs, x/y)
			}
		}
		return median(rs)
	}
	ops := func(s sample) float64 { return s.opsPerSec }
	cpu := func(s sample) float64 { return s.cpuPerReq }
	for _, k := range keys {
		for _, v := range vs {
			if v.bin != "" || !strings.HasPrefix(v.label, "devfsd") {
				continue
			}
			newS, ok1 := res[k][v.label]
			oldS, ok2 := res[k][oldLabel+strings.TrimPrefix(v.label, "devfsd")]
			if !ok1 || !ok2 {
				continue
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", k, v.label,
				num(paired(newS, oldS, ops), "%.3f"), ratio(field(newS, ops), field(oldS, ops)),
				num(paired(newS, oldS, cpu), "%.3f"), ratio(field(newS, cpu), field(oldS, cpu)))
		}
	}
}
