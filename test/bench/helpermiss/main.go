// Command helpermiss measures a miss answered by a helper attached over
// the control socket against a miss answered by the built-in loader, in
// the same run (issue 17: "a miss answered by the attached helper: p50 at
// most 2x the built-in loader's").
//
// Backends, each a devfsd daemon of its own on a fresh mount (the
// catalogue's devices), all mounted at once for one repetition:
//
//	builtin     --loader=builtin, no helper: the built-in loader answers
//	helperd     --loader=none and `devfsd helper` with "LOOKUP .* MODLOAD":
//	            the reference helper loads the same catalogue module and
//	            answers in one request (its registrations with the done)
//	one         --loader=none and testhelper --one-request: a minimal
//	            helper registering one node per LOOKUP, in one request
//	two         the same helper in the two-request form (register, done)
//
// Each repetition lstats every name of -names once on every backend; for
// each name the backends are visited in an order rotated by name, so that
// drift hits them alike. Each lstat is a real miss (checked: it must
// succeed, and the daemon's lookup loads must have grown by one per name).
// A repetition's figure per backend is the median of its lstat times; the
// report gives, per backend, the median over repetitions of the paired
// ratio backend/builtin, and the medians and p90 of all lstats pooled.
//
//	go run ./test/bench/helpermiss [-reps 11] [-backends builtin,helperd,one,two]
//
// Run as root with /dev/fuse. DEVFSD_BIN names the devfsd binary to use;
// without it cmd/devfsd is built. Figures only compare within one run:
// note the load (the report's first line).
//
// -base BIN compares two builds in the same run: a backend named NAME@base
// (builtin@base, helperd@base, ...) is NAME with BIN as its daemon (and as
// `devfsd helper`), and the report adds, for each NAME run both ways, the
// median of the paired ratios NAME / NAME@base, and each @base backend's
// ratio to builtin@base.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/test/harness"
)

var (
	reps     = flag.Int("reps", 11, "repetitions (fresh mounts each)")
	backends = flag.String("backends", "builtin,helperd,one,two", "backends, comma separated: builtin, helperd, one, two")
	names    = flag.String("names", "loop0 tty1 ttyS0 kvm vhost-net vhost-vsock fuse cuse uinput fb0 nvidia0 dsp "+
		"i2c-0 watchdog hwrng btrfs-control autofs uhid rfkill ppp net input dri snd mapper vfio "+
		"sda sdb sdc sdd sde sdf sdg sdh sdi sdj sdk sdl sdm sdn sdo sdp sdq sdr sds sdt sdu sdv sdw sdx sdy sdz",
		"names to lstat, each provided by a different catalogue module")
	base = flag.String("base", "", "a second devfsd `binary`, for the backends named NAME@base")
)

func main() {
	flag.Parse()
	err := run()
	if cerr := harness.Cleanup(); err == nil {
		err = cerr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helpermiss:", err)
		os.Exit(1)
	}
}

// backend is one daemon (and its helper) for one repetition.
type backend struct {
	name   string
	m      *harness.Mount
	helper *exec.Cmd
	out    *harness.SyncBuffer // the helper's output
	lat    []float64           // µs, this repetition
}

func (b *backend) close() {
	if b.helper != nil && b.helper.Process != nil {
		b.helper.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { b.helper.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(harness.TermDeadline):
			b.helper.Process.Kill()
			<-done
		}
	}
	if b.m != nil {
		b.m.Close()
	}
}

const loadsFound = `devfsd_loads_total{loader="%s",result="found"}`

type bins struct{ devfsd, testhelper string }

func start(name string, bin bins) (*backend, error) {
	b := &backend{name: name, out: &harness.SyncBuffer{}}
	kind, isBase := strings.CutSuffix(name, "@base")
	if isBase {
		bin.devfsd = *base
	}
	os.Setenv("DEVFSD_BIN", bin.devfsd) // the harness's daemon
	loader := "none"
	if kind == "builtin" {
		loader = "builtin"
	}
	m, err := harness.Start(harness.Devfsd(), harness.Options{Stats: true,
		DevfsdArgs: []string{"--loader=" + loader, "--log-level=warn"}})
	if err != nil {
		return nil, err
	}
	b.m = m
	sock := m.Dir + ".sock"
	switch kind {
	case "builtin":
		return b, nil
	case "helperd":
		conf := m.Dir + ".conf"
		if err := os.WriteFile(conf, []byte("LOOKUP .* MODLOAD\n"), 0o644); err != nil {
			b.close()
			return nil, err
		}
		b.helper = exec.Command(bin.devfsd, "helper", "-fg", "--config="+conf, "--socket="+sock, "--mount="+m.Dir)
	case "one":
		b.helper = exec.Command(bin.testhelper, "--socket="+sock, "--mount="+m.Dir, "--one-request")
	case "two":
		b.helper = exec.Command(bin.testhelper, "--socket="+sock, "--mount="+m.Dir)
	default:
		b.close()
		return nil, fmt.Errorf("unknown backend %q", name)
	}
	b.helper.Dir = "/"
	b.helper.Stdout, b.helper.Stderr = b.out, b.out
	b.helper.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := b.helper.Start(); err != nil {
		b.close()
		return nil, err
	}
	c := client.New(sock)
	defer c.Close()
	attached := harness.Poll(harness.MountDeadline, 2*time.Millisecond, func() bool {
		s, err := c.Stats(context.Background())
		return err == nil && s.Helper.Attached
	})
	if !attached {
		out := b.out.String()
		b.close()
		return nil, fmt.Errorf("%s: the helper did not attach:\n%s", name, out)
	}
	return b, nil
}

// warm makes one miss outside the measured names (testhelper provides
// it, the catalogue does not): the helper's serve loop runs once it is
// answered.
func (b *backend) warm() error {
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(b.m.Dir, "warm-up"), &st); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%s: warm-up lstat: %v", b.name, err)
	}
	return nil
}

func (b *backend) loads() (float64, error) {
	mt, err := b.m.Metrics()
	if err != nil {
		return 0, err
	}
	loader := "helper"
	if kind, _ := strings.CutSuffix(b.name, "@base"); kind == "builtin" {
		loader = "builtin"
	}
	return mt[fmt.Sprintf(loadsFound, loader)], nil
}

func run() error {
	bs := strings.Split(*backends, ",")
	if !slices.Contains(bs, "builtin") {
		return errors.New("-backends must include builtin, the baseline")
	}
	for _, name := range bs {
		if strings.HasSuffix(name, "@base") && *base == "" {
			return fmt.Errorf("-backends: %s needs -base", name)
		}
	}
	var bin bins
	var err error
	if bin.devfsd = os.Getenv("DEVFSD_BIN"); bin.devfsd == "" {
		if bin.devfsd, err = harness.Build(harness.DevfsdPkg); err != nil {
			return err
		}
		os.Setenv("DEVFSD_BIN", bin.devfsd)
	}
	if bin.testhelper, err = harness.Build("github.com/devfsd/devfsd/test/integration/testhelper"); err != nil {
		return err
	}
	ns := strings.Fields(*names)
	load0 := loadavg()
	startT := time.Now()
	ratios := map[string][]float64{}
	pooled := map[string][]float64{}
	perRep := map[string][]float64{}
	vsBase := map[string][]float64{}     // NAME / NAME@base, paired
	baseRatios := map[string][]float64{} // NAME@base / builtin@base, paired
	for rep := 0; rep < *reps; rep++ {
		var live []*backend
		closeAll := func() {
			for _, b := range live {
				b.close()
			}
		}
		for _, name := range bs {
			b, err := start(name, bin)
			if err != nil {
				closeAll()
				return err
			}
			live = append(live, b)
		}
		before := map[string]float64{}
		for _, b := range live {
			if err := b.warm(); err != nil {
				closeAll()
				return err
			}
			if before[b.name], err = b.loads(); err != nil {
				closeAll()
				return err
			}
		}
		for i, n := range ns {
			for k := range live {
				b := live[(i+rep+k)%len(live)]
				var st unix.Stat_t
				t := time.Now()
				err := unix.Lstat(filepath.Join(b.m.Dir, n), &st)
				d := time.Since(t)
				if err != nil {
					closeAll()
					return fmt.Errorf("%s: lstat %s: %v\nhelper output:\n%s", b.name, n, err, b.out.String())
				}
				b.lat = append(b.lat, float64(d)/float64(time.Microsecond))
			}
		}
		med := map[string]float64{}
		for _, b := range live {
			after, err := b.loads()
			if err != nil {
				closeAll()
				return err
			}
			if got := int(after - before[b.name]); got != len(ns) {
				closeAll()
				return fmt.Errorf("%s: %d loads found a name for %d lstats: not every lstat was a miss the loader answered", b.name, got, len(ns))
			}
			med[b.name] = median(b.lat)
			perRep[b.name] = append(perRep[b.name], med[b.name])
			pooled[b.name] = append(pooled[b.name], b.lat...)
		}
		for _, b := range live {
			ratios[b.name] = append(ratios[b.name], med[b.name]/med["builtin"])
			if kind, ok := strings.CutSuffix(b.name, "@base"); ok {
				if _, both := med[kind]; both {
					vsBase[kind] = append(vsBase[kind], med[kind]/med[b.name])
				}
				if _, ok := med["builtin@base"]; ok {
					baseRatios[b.name] = append(baseRatios[b.name], med[b.name]/med["builtin@base"])
				}
			}
		}
		closeAll()
		fmt.Fprintf(os.Stderr, "rep %d:", rep+1)
		for _, name := range bs {
			fmt.Fprintf(os.Stderr, " %s %.0fµs", name, med[name])
		}
		fmt.Fprintln(os.Stderr)
	}
	fmt.Printf("load average %s at start, %s at end; %s; %d repetitions of %d names, %v\n\n",
		load0, loadavg(), time.Now().UTC().Format(time.RFC3339), *reps, len(ns), time.Since(startT).Round(time.Second))
	fmt.Println("| backend | p50 µs, median of repetitions | pooled p50 µs | pooled p90 µs | max µs | p50 / builtin, median of paired | min–max of paired |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, name := range bs {
		r := ratios[name]
		fmt.Printf("| %s | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f–%.2f |\n", name, median(perRep[name]),
			median(pooled[name]), quantile(pooled[name], 0.9), slices.Max(pooled[name]), median(r), slices.Min(r), slices.Max(r))
	}
	if len(vsBase) > 0 || len(baseRatios) > 0 {
		fmt.Printf("\n-base %s:\n\n", *base)
		fmt.Println("| backend | NAME / NAME@base, median of paired | min–max | NAME@base / builtin@base, median of paired |")
		fmt.Println("|---|---:|---:|---:|")
		for _, name := range bs {
			kind, ok := strings.CutSuffix(name, "@base")
			if !ok {
				continue
			}
			v, br := vsBase[kind], baseRatios[name]
			cell := func(x []float64, f func([]float64) float64) string {
				if len(x) == 0 {
					return "–"
				}
				return fmt.Sprintf("%.2f", f(x))
			}
			fmt.Printf("| %s | %s | %s–%s | %s |\n", kind, cell(v, median), cell(v, slices.Min[[]float64]), cell(v, slices.Max[[]float64]), cell(br, median))
		}
	}
	return nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func median(v []float64) float64 { return quantile(v, 0.5) }

func quantile(v []float64, q float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	x := q * float64(len(s)-1)
	i := int(x)
	if i+1 >= len(s) {
		return s[i]
	}
	return s[i] + (s[i+1]-s[i])*(x-float64(i))
}
