// Command hotplug measures how fast a new device's node appears: from
// LOOP_CTL_ADD returning to the node visible by lstat, over -n loop
// devices made one at a time, in the same run for every target:
//
//	devtmpfs   the kernel's own node in /dev (made before LOOP_CTL_ADD
//	           returns: the limit)
//	mdev       busybox mdev -d (netlink), in a private mount namespace with
//	           a tmpfs as its /dev, looked at through /proc/PID/root/dev
//	source     devfsd's kernel source (modload/kernel) in this process,
//	           over a dcache namespace: the uevent path without FUSE
//	-dirs      directories: a devfsd mount with the kernel source and its
//	           views, lstat DIR/loopN
//
// One goroutine polls every target in turn with lstat until each has the
// node, so a target's figure is the time of the first poll that saw it
// (a round of polls takes a few microseconds; the target a round starts
// with rotates from one device to the next). After each device every
// target must see it removed before the next is made. Coldplug of this
// machine by the source (a fresh namespace, all of /sys) is timed too.
//
//	go run ./test/bench/hotplug [-n 200] [-targets devtmpfs,mdev,source]
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
)

var (
	nDevices = flag.Int("n", 200, "loop devices to make, one at a time")
	base     = flag.Int("base", 300, "lowest loop index to use")
	targets  = flag.String("targets", "devtmpfs,mdev,source", "targets, comma separated: devtmpfs, mdev, source")
	timeout  = flag.Duration("timeout", 5*time.Second, "give up on a node after this long")
	coldRuns = flag.Int("coldplug", 20, "coldplug runs to time (0: none)")
	busybox  = flag.String("busybox", "busybox", "the busybox binary")
	dirs     = flag.String("dirs", "", "more targets: directories (a devfsd mount, its views), comma separated, lstat DIR/loopN")
)

// target is one place a node appears.
type target struct {
	name string
	// visible reports whether loop device name is there now.
	visible func(name string) bool
	stop    func()
	lat     []time.Duration
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
	if *dirs != "" {
		for _, d := range strings.Split(*dirs, ",") {
			ts = append(ts, &target{name: d, visible: func(n string) bool { return lstatOK(filepath.Join(d, n)) }})
		}
	}
	// Warm up: one device every target must see, unmeasured.
	made := map[int]bool{}
	defer func() {
		for i := range made {
			_ = loopCtl(unix.LOOP_CTL_REMOVE, i)
		}
	}()
	next := *base
	one := func(measure bool) error {
		i, err := addFree(&next)
		if err != nil {
			return err
		}
		made[i] = true
		t0 := time.Now()
		name := fmt.Sprintf("loop%d", i)
		if err := waitAll(ts, name, true, t0, measure); err != nil {
			return err
		}
		if err := removeLoop(i); err != nil {
			return err
		}
		delete(made, i)
		return waitAll(ts, name, false, time.Now(), false)
	}
	if err := one(false); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	var load1 string
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load1 = strings.Fields(string(b))[0]
	}
	for range *nDevices {
		if err := one(true); err != nil {
			return err
		}
	}
	fmt.Printf("hotplug: %d loop devices, one at a time; load average %s at the start\n\n", *nDevices, load1)
	fmt.Println("| target | p50 | p99 | max | mean |")
	fmt.Println("|---|---|---|---|---|")
	for _, t := range ts {
		p50, p99, max, mean := summary(t.lat)
		fmt.Printf("| %s | %s | %s | %s | %s |\n", t.name, us(p50), us(p99), us(max), us(mean))
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

var rot int

// waitAll polls every target until each shows name present (or absent),
// recording the latency from t0 if measure.
func waitAll(ts []*target, name string, present bool, t0 time.Time, measure bool) error {
	// Each device's rounds start at another target, so that no target is
	// always polled last.
	rot++
	k := rot % len(ts)
	pending := append(slices.Clone(ts[k:]), ts[:k]...)
	deadline := t0.Add(*timeout)
	for len(pending) > 0 {
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

func loopCtl(req uintptr, i int) error {
	f, err := os.OpenFile("/dev/loop-control", os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), req, uintptr(i)); e != 0 {
		return e
	}
	return nil
}

// addFree makes the first free loop index at *next or above.
func addFree(next *int) (int, error) {
	for ; *next < 1<<20; *next++ {
		if _, err := os.Stat(fmt.Sprintf("/sys/block/loop%d", *next)); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		err := loopCtl(unix.LOOP_CTL_ADD, *next)
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
		err := loopCtl(unix.LOOP_CTL_REMOVE, i)
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

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }
func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
