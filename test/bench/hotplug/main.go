// Command hotplug measures how fast a new device's node appears: from
// LOOP_CTL_ADD returning to the node visible by lstat, loop devices made
// one at a time, in the same run for every target:
//
//	devtmpfs   the kernel's own node in /dev (made before LOOP_CTL_ADD
//	           returns: the limit)
//	mdev       busybox mdev -d (netlink), in a private mount namespace with
//	           a tmpfs as its /dev, looked at through /proc/PID/root/dev
//	source     devfsd's kernel source (modload/kernel) in this process,
//	           over a dcache namespace: the uevent path without FUSE
//	-devfsd    a devfsd daemon (this binary) with the kernel source
//	           (-devfsd-args, "--devices=kernel" by default) on a mount
//	           and -views views, lstat through each
//	-dirs      directories: any other mount, lstat DIR/loopN
//
// Every target handles every device; each device is measured in one
// target only, in turn: from the ioctl's return, that target alone is
// polled with lstat until it has the node, so its figure is the time of
// the first poll that saw it, with no other target's polls in between
// (the others are polled afterwards, unmeasured, until they have it too).
// Each target is measured on -n devices. After each device every target
// must see it removed before the next is made. After each device measured
// on the -devfsd mount, one lstat there of a missing name (a fresh one: a
// LOOKUP round trip that asks the loader, the floor of any figure through
// the mount) is timed too. Coldplug of this
// machine by the source (a fresh namespace, all of /sys) is timed too.
//
//	go run ./test/bench/hotplug [-n 200] [-targets devtmpfs,mdev,source] [-devfsd BIN -views 10]
//
// Run as root on a host with /dev/loop-control and busybox. Loop indexes
// are taken free at -base and above and removed at the end. Figures are
// only comparable within one run.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload/kernel"
	"github.com/devfsd/devfsd/test/loopdev"
)

var (
	nDevices = flag.Int("n", 200, "devices measured per target (n × targets are made, one at a time)")
	base     = flag.Int("base", 6000, "lowest loop index to use (tests pick 100-999)")
	targets  = flag.String("targets", "devtmpfs,mdev,source", "targets, comma separated: devtmpfs, mdev, source")
	timeout  = flag.Duration("timeout", 5*time.Second, "give up on a node after this long")
	coldRuns = flag.Int("coldplug", 20, "coldplug runs to time (0: none)")
	busybox  = flag.String("busybox", "busybox", "the busybox binary")
	dirs     = flag.String("dirs", "", "more targets: directories (a devfsd mount, its views), comma separated, lstat DIR/loopN")
	devfsd   = flag.String("devfsd", "", "a devfsd binary: run it with the kernel source, on a mount and -views views, as targets")
	dArgs    = flag.String("devfsd-args", "--devices=kernel", "flags for devfsd mount besides the mount point, --view and --socket (space separated)")
	nViews   = flag.Int("views", 10, "views of the -devfsd daemon")
)

// target is one place a node appears.
type target struct {
	name string
	// visible reports whether loop device name is there now.
	visible func(name string) bool
	stop    func()
	lat     []time.Duration
	first   int  // measured devices the first lstat saw
	view    bool // a view of the -devfsd daemon
	// roundTrip, if not nil, times one lookup of a name that does not
	// exist (fresh each time: neither cache has it); rt holds the times.
	roundTrip func() time.Duration
	rt        []time.Duration
}

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "hotplug:", err)
		os.Exit(1)
	}
}

func run() error {
	var ts []*target
	defer func() {
		for _, t := range ts {
			if t.stop != nil {
				t.stop()
			}
		}
	}()
	for _, name := range strings.Split(*targets, ",") {
		t, err := newTarget(name)
		if err != nil {
			return fmt.Errorf("target %s: %w", name, err)
		}
		ts = append(ts, t)
	}
	if *devfsd != "" {
		dts, stop, err := startDevfsd(*devfsd, *nViews)
		if err != nil {
			return fmt.Errorf("devfsd: %w", err)
		}
		defer stop()
		ts = append(ts, dts...)
	}
	if *dirs != "" {
		for _, d := range strings.Split(*dirs, ",") {
			ts = append(ts, &target{name: d, visible: func(n string) bool { return lstatOK(filepath.Join(d, n)) }})
		}
	}
	// Warm up: one device every target must see, unmeasured.
	made := map[int]bool{}
	defer func() {
		for i := range made {
			_ = loopdev.Ctl(unix.LOOP_CTL_REMOVE, i)
		}
	}()
	next := *base
	// one makes a device; if m is not nil, it polls m alone until m has
	// the node (its latency), then every target; then removes it.
	one := func(m *target) error {
		i, err := addFree(&next)
		if err != nil {
			return err
		}
		made[i] = true
		t0 := time.Now()
		name := fmt.Sprintf("loop%d", i)
		if m != nil {
			if err := waitAll([]*target{m}, name, true, t0, true); err != nil {
				return err
			}
		}
		if err := waitAll(ts, name, true, t0, false); err != nil {
			return err
		}
		if err := removeLoop(i); err != nil {
			return err
		}
		delete(made, i)
		if err := waitAll(ts, name, false, time.Now(), false); err != nil {
			return err
		}
		if m != nil && m.roundTrip != nil {
			m.rt = append(m.rt, m.roundTrip())
		}
		return nil
	}
	if err := one(nil); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	var load1 string
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load1 = strings.Fields(string(b))[0]
	}
	for k := range *nDevices * len(ts) {
		if err := one(ts[k%len(ts)]); err != nil {
			return err
		}
	}
	fmt.Printf("hotplug: %d loop devices, one at a time, %d measured per target; load average %s at the start\n\n", *nDevices*len(ts), *nDevices, load1)
	fmt.Println("| target | p50 | p99 | max | mean | seen by the first lstat |")
	fmt.Println("|---|---|---|---|---|---|")
	var views []time.Duration
	viewsFirst := 0
	for _, t := range ts {
		p50, p99, max, mean := summary(t.lat)
		fmt.Printf("| %s | %s | %s | %s | %s | %s |\n", t.name, us(p50), us(p99), us(max), us(mean), pct(t.first, len(t.lat)))
		if t.view {
			views = append(views, t.lat...)
			viewsFirst += t.first
		}
	}
	if len(views) > 0 {
		p50, p99, max, mean := summary(views)
		fmt.Printf("| devfsd views, all %d together | %s | %s | %s | %s | %s |\n", *nViews, us(p50), us(p99), us(max), us(mean), pct(viewsFirst, len(views)))
	}
	for _, t := range ts {
		if len(t.rt) > 0 {
			p50, p99, max, mean := summary(t.rt)
			fmt.Printf("| %s: one LOOKUP round trip (lstat of a missing name) | %s | %s | %s | %s | |\n", t.name, us(p50), us(p99), us(max), us(mean))
		}
	}
	if *coldRuns > 0 {
		var runs []time.Duration
		nodes := 0
		for range *coldRuns {
			ns := dcache.New(dcache.Options{})
			src, err := kernel.New(kernel.Options{Namespace: kernel.DcacheNamespace{NS: ns, Caller: dcache.Caller{Origin: dcache.OriginBuiltin}}})
			if err != nil {
				return err
			}
			start := time.Now()
			if err := src.Coldplug(); err != nil {
				return err
			}
			runs = append(runs, time.Since(start))
			nodes = src.Stats().Registered
		}
		p50, _, max, _ := summary(runs)
		fmt.Printf("\ncoldplug of this machine (%d nodes, a fresh namespace): p50 %s, max %s over %d runs\n", nodes, ms(p50), ms(max), *coldRuns)
	}
	return nil
}

// waitAll polls every target until each shows name present (or absent),
// recording the latency from t0 if measure.
func waitAll(ts []*target, name string, present bool, t0 time.Time, measure bool) error {
	pending := slices.Clone(ts)
	deadline := t0.Add(*timeout)
	for polls := 1; len(pending) > 0; polls++ {
		now := time.Now()
		if now.After(deadline) {
			var names []string
			for _, t := range pending {
				names = append(names, t.name)
			}
			return fmt.Errorf("%s %s after %v in %v", name, map[bool]string{true: "not there", false: "still there"}[present], *timeout, names)
		}
		pending = slices.DeleteFunc(pending, func(t *target) bool {
			if t.visible(name) != present {
				return false
			}
			if measure {
				t.lat = append(t.lat, time.Since(t0))
				if polls == 1 {
					t.first++
				}
			}
			return true
		})
	}
	return nil
}

func lstatOK(p string) bool {
	var st unix.Stat_t
	return unix.Lstat(p, &st) == nil
}

func newTarget(name string) (*target, error) {
	switch name {
	case "devtmpfs":
		return &target{name: "devtmpfs (/dev)", visible: func(n string) bool { return lstatOK("/dev/" + n) }}, nil
	case "mdev":
		return startMdev()
	case "source":
		return startSource()
	}
	return nil, fmt.Errorf("unknown target (devtmpfs, mdev, source)")
}

// startMdev runs busybox mdev -d in a mount namespace of its own whose
// /dev is a fresh tmpfs.
func startMdev() (*target, error) {
	bb, err := exec.LookPath(*busybox)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", `mount -t tmpfs -o mode=0755 mdev-dev /dev && exec "$0" mdev -d -f`, bb)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	}
	dev := fmt.Sprintf("/proc/%d/root/dev", cmd.Process.Pid)
	// Ready once its /dev is the tmpfs (the shell mounted it and exec'd
	// mdev, whose pid it is) and mdev is past its start: its netlink
	// socket shows in /proc/PID/net/netlink... simpler and sufficient: the
	// warm-up device of run() must appear there.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); err == nil && filepath.Base(exe) == filepath.Base(bb) {
			var st, host unix.Statfs_t
			if unix.Statfs(dev, &st) == nil && unix.Statfs("/dev", &host) == nil && st.Fsid != host.Fsid {
				break
			}
		}
		if time.Now().After(deadline) {
			stop()
			return nil, errors.New("mdev did not start")
		}
		time.Sleep(time.Millisecond)
	}
	return &target{name: "busybox mdev -d", visible: func(n string) bool { return lstatOK(dev + "/" + n) }, stop: stop}, nil
}

// startSource starts the kernel source over a namespace of its own.
func startSource() (*target, error) {
	ns := dcache.New(dcache.Options{})
	src, err := kernel.New(kernel.Options{Namespace: kernel.DcacheNamespace{NS: ns, Caller: dcache.Caller{Origin: dcache.OriginBuiltin}}})
	if err != nil {
		return nil, err
	}
	if err := src.Start(); err != nil {
		return nil, err
	}
	return &target{
		name: "devfsd kernel source (in process, no FUSE)",
		visible: func(n string) bool {
			_, err := ns.Resolve(n)
			return err == nil
		},
		stop: func() { src.Close() },
	}, nil
}

// fuseMagic is FUSE_SUPER_MAGIC, statfs's f_type of a FUSE mount.
const fuseMagic = 0x65735546

// startDevfsd runs bin mount with -devfsd-args on a fresh directory with
// n views, and returns a target for the mount and one per view.
func startDevfsd(bin string, n int) ([]*target, func(), error) {
	base, err := os.MkdirTemp("", "devfsd-hotplug-bench-")
	if err != nil {
		return nil, nil, err
	}
	mnt := filepath.Join(base, "mnt")
	dirs := []string{mnt}
	args := []string{"mount", "--socket=" + filepath.Join(base, "sock"), "--log-level=warn", "--views-dir=" + base}
	args = append(args, strings.Fields(*dArgs)...)
	for i := range n {
		dir := filepath.Join(base, fmt.Sprintf("view%d", i+1))
		file := dir + ".yaml"
		if err := os.WriteFile(file, []byte("mountpoint: "+dir+"\n"), 0644); err != nil {
			return nil, nil, err
		}
		args = append(args, "--view="+file)
		dirs = append(dirs, dir)
	}
	for _, d := range dirs {
		if err := os.Mkdir(d, 0755); err != nil {
			return nil, nil, err
		}
	}
	cmd := exec.Command(bin, append(args, mnt)...)
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, nil, err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		for _, d := range dirs {
			_ = unix.Unmount(d, unix.MNT_DETACH) // only if it was left mounted
		}
		_ = os.RemoveAll(base)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, d := range dirs {
		for {
			var st unix.Statfs_t
			if unix.Statfs(d, &st) == nil && st.Type == fuseMagic {
				break
			}
			select {
			case <-exited:
				stop()
				return nil, nil, errors.New("devfsd exited before its mounts were live")
			default:
			}
			if time.Now().After(deadline) {
				stop()
				return nil, nil, fmt.Errorf("%s not mounted after 20 s", d)
			}
			time.Sleep(time.Millisecond)
		}
	}
	rt := 0
	ts := []*target{{name: "devfsd mount", visible: func(n string) bool { return lstatOK(filepath.Join(mnt, n)) },
		roundTrip: func() time.Duration {
			rt++
			var st unix.Stat_t
			t0 := time.Now()
			_ = unix.Lstat(filepath.Join(mnt, fmt.Sprintf("hotplug-rt%d", rt)), &st)
			return time.Since(t0)
		}}}
	for i, d := range dirs[1:] {
		ts = append(ts, &target{name: fmt.Sprintf("devfsd view %d", i+1), view: true,
			visible: func(n string) bool { return lstatOK(filepath.Join(d, n)) }})
	}
	return ts, stop, nil
}

// addFree makes the first free loop index at *next or above.
func addFree(next *int) (int, error) {
	for ; *next < 1<<20; *next++ {
		if _, err := os.Stat(fmt.Sprintf("/sys/block/loop%d", *next)); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		err := loopdev.Ctl(unix.LOOP_CTL_ADD, *next)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("LOOP_CTL_ADD %d: %w", *next, err)
		}
		*next++
		return *next - 1, nil
	}
	return 0, errors.New("no free loop index")
}

func removeLoop(i int) error {
	deadline := time.Now().Add(*timeout)
	for {
		err := loopdev.Ctl(unix.LOOP_CTL_REMOVE, i)
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			if err != nil {
				return fmt.Errorf("LOOP_CTL_REMOVE %d: %w", i, err)
			}
			return nil
		}
		time.Sleep(time.Millisecond) // someone (mdev?) has it open for a moment
	}
}

func summary(d []time.Duration) (p50, p99, max, mean time.Duration) {
	if len(d) == 0 {
		return
	}
	s := slices.Clone(d)
	slices.Sort(s)
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	q := func(f float64) time.Duration { return s[min(len(s)-1, int(f*float64(len(s))))] }
	return q(0.50), q(0.99), s[len(s)-1], sum / time.Duration(len(s))
}

func pct(n, of int) string {
	if of == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(of))
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }
func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
