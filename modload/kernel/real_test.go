package kernel

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/test/loopdev"
)

// These tests act on the real kernel: its sysfs, its uevents, loop
// devices made and removed with LOOP_CTL_ADD and LOOP_CTL_REMOVE. Loop
// minors are picked at random at 100 and above, free when picked, and
// removed in t.Cleanup: other test runs may make loop devices at the same
// time.

// wait is the deadline for anything the kernel does.
const wait = 20 * time.Second

func needKernel(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: LOOP_CTL_ADD and writes to sysfs uevent files")
	}
	if _, err := os.Stat("/sys/dev/block"); err != nil {
		t.Skipf("no sysfs: %v", err)
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop-control: %v", err)
	}
}

func trigger(t *testing.T, number, action string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join("/sys/dev/block", number, "uevent"), []byte(action), 0); err != nil {
		t.Fatalf("echo %s > /sys/dev/block/%s/uevent: %v", action, number, err)
	}
}

func pollFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

func startReal(t *testing.T, opts Options) *rig {
	t.Helper()
	needKernel(t)
	r := newRig(t, opts)
	if err := r.src.Start(); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestHotplugLoopDevice(t *testing.T) {
	r := startReal(t, Options{})
	r.src.Declines("", "no-such-device") // a uevent queued while coldplug ran may be stale by right
	st0 := r.src.Stats()
	i := loopdev.Add(t)
	name := fmt.Sprintf("loop%d", i)
	num := loopdev.Number(t, i)
	want := "block " + num + " 0660 0:6"
	until(t, wait, name+" registered", func() bool { return r.node(name) == want })
	d, registered, ok := r.src.Info(name)
	if !ok || !registered || d.Subsystem != "block" || d.DevPath != "/devices/virtual/block/"+name || d.Env["DEVTYPE"] != "disk" || d.Seq == 0 {
		t.Fatalf("Info(%s) = %+v %v %v", name, d, registered, ok)
	}
	ino := r.ino(name)

	// echo add: re-registers idempotently.
	seq := d.Seq
	trigger(t, num, "add")
	until(t, wait, "the synthetic add applied", func() bool { d, _, _ := r.src.Info(name); return d.Seq > seq })
	if d, _, _ := r.src.Info(name); d.Env["ACTION"] != "add" || d.Env["SYNTH_UUID"] == "" {
		t.Errorf("the synthetic add: %v", d.Env)
	}
	if r.ino(name) != ino || r.evs.count(dcache.KindRegister, name) != 1 {
		t.Fatalf("echo add re-registered %s", name)
	}

	// echo change: a CHANGE.
	changes := r.evs.count(dcache.KindChange, name)
	trigger(t, num, "change")
	until(t, wait, "CHANGE of "+name, func() bool { return r.evs.count(dcache.KindChange, name) > changes })
	if r.ino(name) != ino {
		t.Fatal("echo change re-registered")
	}

	loopdev.Remove(t, i)
	until(t, wait, name+" unregistered", func() bool { return r.node(name) == "" })
	if _, _, ok := r.src.Info(name); ok {
		t.Error("Info of a removed device")
	}
	if st := r.src.Stats(); st.Forged != 0 || st.Malformed != st0.Malformed || st.Stale != st0.Stale {
		t.Errorf("stats %+v, at the start %+v", st, st0)
	}
}

// sendForged sends msg from a user process's netlink socket to dst.
func sendForged(t *testing.T, dst *unix.SockaddrNetlink, msg []byte) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	must(t, err)
	defer unix.Close(fd)
	must(t, unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}))
	must(t, unix.Sendto(fd, msg, 0, dst))
}

func TestForgedUeventIsIgnored(t *testing.T) {
	r := startReal(t, Options{})
	r.src.Declines("", "no-such-device") // a uevent queued while coldplug ran may be stale by right
	st0 := r.src.Stats()
	name := fmt.Sprintf("forged%d", rand.IntN(1<<30))
	forged := msg("add@/devices/virtual/block/"+name, "ACTION=add", "DEVPATH=/devices/virtual/block/"+name,
		"SUBSYSTEM=block", "MAJOR=7", "MINOR=999999", "DEVNAME="+name, fmt.Sprintf("SEQNUM=%d", uint64(1)<<62))
	// To the kernel's group, as a process can as root, and straight to the
	// source's socket.
	sendForged(t, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: kernelGroup}, forged)
	var port uint32
	must(t, r.src.conn.Load().rc.Control(func(fd uintptr) {
		sa, err := unix.Getsockname(int(fd))
		must(t, err)
		port = sa.(*unix.SockaddrNetlink).Pid
	}))
	sendForged(t, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: port}, forged)
	until(t, wait, "two forged uevents counted", func() bool { return r.src.Stats().Forged >= 2 })
	if r.node(name) != "" {
		t.Fatal("a forged uevent registered a node")
	}
	if _, _, ok := r.src.Info(name); ok {
		t.Fatal("a forged uevent made a device known")
	}
	// The forged SEQNUM did not stop the kernel's uevents from applying.
	i := loopdev.Add(t)
	until(t, wait, "a real add after the forged ones", func() bool { return r.node(fmt.Sprintf("loop%d", i)) != "" })
	if st := r.src.Stats(); st.Stale != st0.Stale {
		t.Errorf("stale %d, %d at the start", st.Stale, st0.Stale)
	}
}

// sysfsDiff compares the namespace with what sysfs says now: every device
// there has its node (name, type, number) here, and every node the source
// registered is a device there. It returns the differences.
func (r *rig) sysfsDiff(root string) []string {
	devs, _, err := scan(root, r.src.defaults)
	if err != nil {
		return []string{err.Error()}
	}
	var diff []string
	want := map[string]bool{}
	for _, d := range devs {
		want[d.Node.Path] = true
		n, _, ok := r.src.ns.Lookup(d.Node.Path)
		if !ok || n.Type != d.Node.Type || n.Major != d.Node.Major || n.Minor != d.Node.Minor {
			diff = append(diff, fmt.Sprintf("sysfs has %v, the namespace %v (%v)", d.Node, n, ok))
		}
	}
	for _, d := range r.src.Devices() {
		if !want[d.Node.Path] {
			diff = append(diff, fmt.Sprintf("the source has %v, sysfs not", d.Node))
		}
	}
	return diff
}

func TestOverrunRescansToSysfs(t *testing.T) {
	r := startReal(t, Options{ReceiveBuffer: 1}) // the kernel's smallest
	gone := loopdev.Add(t)
	num := loopdev.Number(t, gone)
	until(t, wait, "the first loop device registered", func() bool { return r.node(fmt.Sprintf("loop%d", gone)) != "" })
	// Stall the reader (it blocks applying the next uevent) while the
	// kernel sends a burst, a device comes and a device goes.
	r.src.mu.Lock()
	const burst = 1000
	for range burst {
		if err := os.WriteFile(filepath.Join("/sys/dev/block", num, "uevent"), []byte("change"), 0); err != nil {
			r.src.mu.Unlock()
			t.Fatal(err)
		}
	}
	var came int
	func() {
		defer r.src.mu.Unlock()
		came = loopdev.Add(t)
		loopdev.Remove(t, gone)
	}()
	until(t, wait, "an overrun and a rescan", func() bool { st := r.src.Stats(); return st.Overruns >= 1 && st.Rescans >= 1 })
	var diff []string
	if !pollFor(wait, func() bool { diff = r.sysfsDiff("/sys"); return len(diff) == 0 }) {
		t.Fatalf("the namespace does not converge to sysfs:\n%s", strings.Join(diff, "\n"))
	}
	if r.node(fmt.Sprintf("loop%d", gone)) != "" || r.node(fmt.Sprintf("loop%d", came)) == "" {
		t.Fatalf("loop%d (gone) %q, loop%d (came) %q", gone, r.node(fmt.Sprintf("loop%d", gone)), came, r.node(fmt.Sprintf("loop%d", came)))
	}
	st := r.src.Stats()
	t.Logf("burst of %d: %d applied, %d overruns, %d rescans", burst, st.Received["change"], st.Overruns, st.Rescans)
	if st.Received["change"] >= burst {
		t.Errorf("all %d changes applied: no uevent was lost", st.Received["change"])
	}
}

// devtmpfsNodes walks /dev (devtmpfs) for its char and block nodes,
// leaving out other filesystems mounted under it (pts, shm, mqueue).
func devtmpfsNodes(t *testing.T) map[string]string {
	t.Helper()
	var root unix.Stat_t
	must(t, unix.Stat("/dev", &root))
	out := map[string]string{}
	err := filepath.WalkDir("/dev", func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // gone meanwhile
			}
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return nil
		}
		if st.Dev != root.Dev {
			if e.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		kind := ""
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFCHR:
			kind = "char"
		case unix.S_IFBLK:
			kind = "block"
		default:
			return nil
		}
		rel, _ := filepath.Rel("/dev", p)
		out[rel] = fmt.Sprintf("%s %d:%d", kind, unix.Major(st.Rdev), unix.Minor(st.Rdev))
		return nil
	})
	must(t, err)
	return out
}

func TestColdplugEqualsDevtmpfs(t *testing.T) {
	needKernel(t)
	mounts, err := os.ReadFile("/proc/self/mounts")
	must(t, err)
	if !strings.Contains(string(mounts), "devtmpfs /dev devtmpfs") {
		t.Skip("/dev is not devtmpfs")
	}
	var diff []string
	var took time.Duration
	var n int
	ok := pollFor(wait, func() bool {
		r := newRig(t, Options{Logger: zapNop})
		start := time.Now()
		must(t, r.src.Coldplug())
		took = time.Since(start)
		dev := devtmpfsNodes(t)
		diff = diff[:0]
		ours := map[string]string{}
		for _, d := range r.src.Devices() {
			ours[d.Node.Path] = fmt.Sprintf("%s %d:%d", d.Node.Type, d.Node.Major, d.Node.Minor)
			if got := r.node(d.Node.Path); !strings.HasPrefix(got, ours[d.Node.Path]+" ") {
				diff = append(diff, fmt.Sprintf("%s: known as %s, registered %q", d.Node.Path, ours[d.Node.Path], got))
			}
		}
		for p, v := range dev {
			if ours[p] != v {
				diff = append(diff, fmt.Sprintf("/dev/%s is %s, coldplug %q", p, v, ours[p]))
			}
		}
		for p, v := range ours {
			if dev[p] != v {
				diff = append(diff, fmt.Sprintf("coldplug %s is %s, /dev %q", p, v, dev[p]))
			}
		}
		n = len(dev)
		return len(diff) == 0
	})
	if !ok {
		t.Fatalf("coldplug differs from devtmpfs:\n%s", strings.Join(diff, "\n"))
	}
	t.Logf("coldplug of %d nodes equals /dev; took %v", n, took)
}

// The modprobe program of the autoload tests is this test binary,
// started by a script with KERNEL_TEST_MODPROBE set (see TestMain).
func TestMain(m *testing.M) {
	if mode := os.Getenv("KERNEL_TEST_MODPROBE"); mode != "" {
		os.Exit(fakeModprobe(mode))
	}
	if os.Getenv("KERNEL_TEST_USABLE") == "1" {
		ok, why := Usable("/sys")
		fmt.Printf("usable %v: %s\n", ok, why)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeModprobe is the modprobe of the tests: argv is "-q -- MODULE".
// Mode "loop" makes loop device KERNEL_TEST_LOOP, "nothing" makes
// nothing, "fail" exits 1; every run is logged to KERNEL_TEST_LOG, and
// with KERNEL_TEST_HOLD set the run waits for that file to exist.
func fakeModprobe(mode string) int {
	args := os.Args[1:]
	if len(args) != 3 || args[0] != "-q" || args[1] != "--" {
		fmt.Fprintf(os.Stderr, "usage: modprobe -q -- MODULE (got %q)\n", args)
		return 2
	}
	if log := os.Getenv("KERNEL_TEST_LOG"); log != "" {
		f, err := os.OpenFile(log, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0644)
		if err != nil {
			return 3
		}
		fmt.Fprintln(f, args[2])
		f.Close()
	}
	if hold := os.Getenv("KERNEL_TEST_HOLD"); hold != "" {
		for {
			if _, err := os.Stat(hold); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
	}
	switch mode {
	case "loop":
		var i int
		fmt.Sscan(os.Getenv("KERNEL_TEST_LOOP"), &i)
		if err := loopdev.Ctl(unix.LOOP_CTL_ADD, i); err != nil {
			fmt.Fprintln(os.Stderr, "LOOP_CTL_ADD:", err)
			return 1
		}
	case "fail":
		fmt.Fprintln(os.Stderr, "modprobe: FATAL: Module", args[2], "not found")
		return 1
	}
	return 0
}

// modprobeScript writes a modprobe program that runs fakeModprobe in mode
// with the given environment.
func modprobeScript(t *testing.T, mode string, env ...string) string {
	t.Helper()
	self, err := os.Executable()
	must(t, err)
	p := filepath.Join(t.TempDir(), "modprobe")
	script := fmt.Sprintf("#!/bin/sh\nexec env KERNEL_TEST_MODPROBE=%s %s %s \"$@\"\n", mode, strings.Join(env, " "), self)
	must(t, os.WriteFile(p, []byte(script), 0755))
	return p
}

func devnameFile(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "modules.devname")
	must(t, os.WriteFile(p, []byte("# test\n"+strings.Join(lines, "\n")+"\n"), 0644))
	return p
}

func TestAutoloadWaitsForTheKernelsAdd(t *testing.T) {
	needKernel(t)
	i := loopdev.Free(t)
	loopdev.RemoveAtCleanup(t, i)
	name := fmt.Sprintf("loop%d", i)
	log := filepath.Join(t.TempDir(), "runs")
	hold := filepath.Join(t.TempDir(), "hold")
	r := startReal(t, Options{
		ModulesDevname: devnameFile(t, fmt.Sprintf("loop %s b7:%d", name, i)),
		Modprobe:       modprobeScript(t, "loop", "KERNEL_TEST_LOOP="+fmt.Sprint(i), "KERNEL_TEST_LOG="+log, "KERNEL_TEST_HOLD="+hold),
	})
	if r.src.Declines("", name) {
		t.Fatalf("%s declined; modules.devname lists it", name)
	}
	if !r.src.Declines("", "nvidia0") || !r.src.Declines("", "sda1") {
		t.Fatal("names that neither the kernel nor modules.devname has are not declined")
	}
	// Concurrent loads of the name share one run of the program.
	const loads = 20
	errs := make(chan error, loads)
	for range loads {
		go func() {
			ctx, cancel := contextWithTimeout(t, wait)
			defer cancel()
			errs <- r.src.Load(ctx, "", name, modloadCaller)
		}()
	}
	until(t, wait, "every load waiting for the one run", func() bool { return r.src.joined.Load() == loads-1 })
	must(t, os.WriteFile(hold, nil, 0644))
	for range loads {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := r.node(name); got != "block 7:"+fmt.Sprint(i)+" 0660 0:6" {
		t.Fatalf("%s after the load: %q", name, got)
	}
	runs, _ := os.ReadFile(log)
	if string(runs) != "loop\n" {
		t.Fatalf("modprobe runs: %q, want one of loop", runs)
	}
	if st := r.src.Stats(); st.Autoloads != 1 || st.AutoloadFailures != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestAutoloadEnds(t *testing.T) {
	needKernel(t)
	r := newRig(t, Options{
		ModulesDevname: devnameFile(t, "nothing nothing0 c10:250", "fail fail0 c10:251"),
		SysfsRoot:      "/sys",
	})
	// The program creates nothing: the load ends at its deadline.
	r.src.opts.Modprobe = modprobeScript(t, "nothing")
	ctx, cancel := contextWithTimeout(t, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.src.Load(ctx, "", "nothing0", modloadCaller)
	if !errors.Is(err, ctxDeadline) || time.Since(start) < 300*time.Millisecond {
		t.Fatalf("load of nothing0: %v after %v; want the deadline", err, time.Since(start))
	}
	if r.node("nothing0") != "" {
		t.Fatal("nothing0 registered")
	}
	// The program fails: the load ends with its error at once.
	// (The run above may have been killed at the deadline, a failure too,
	// on a slow machine.)
	failures := r.src.Stats().AutoloadFailures
	r.src.opts.Modprobe = modprobeScript(t, "fail")
	ctx, cancel = contextWithTimeout(t, wait)
	defer cancel()
	if err := r.src.Load(ctx, "", "fail0", modloadCaller); err == nil || errors.Is(err, ctxDeadline) {
		t.Fatalf("load with a failing modprobe: %v", err)
	}
	if got := r.src.Stats().AutoloadFailures; got != failures+1 {
		t.Errorf("autoload failures %d, want %d", got, failures+1)
	}
	// No entry: ENOENT at once, nothing run.
	if err := r.src.Load(ctx, "", "nvidia0", modloadCaller); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("load of nvidia0: %v", err)
	}
	if err := r.src.Load(ctx, "a/..", "x", modloadCaller); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("load of a/../x: %v", err)
	}
	if st := r.src.Stats(); st.Autoloads != 2 {
		t.Errorf("autoloads %d, want 2 (none for names without an entry)", st.Autoloads)
	}
}

// Close stops the reader quietly and at once, and leaves the nodes.
func TestCloseStopsQuietly(t *testing.T) {
	needKernel(t)
	core, logs := observer.New(zap.WarnLevel)
	r := newRig(t, Options{Logger: zap.New(core)})
	must(t, r.src.Start())
	n := r.src.Stats().Registered
	must(t, r.src.Close())
	must(t, r.src.Close()) // idempotent
	if logs.Len() != 0 {
		t.Fatalf("logged at Start or Close: %v", logs.All())
	}
	if got := r.src.Stats().Registered; got != n || r.node("null") == "" {
		t.Fatalf("Close changed the namespace: %d registered, was %d", got, n)
	}
}

// zram's hot_add and hot_remove: another driver's devices come and go.
func TestHotplugZram(t *testing.T) {
	const ctl = "/sys/class/zram-control"
	if _, err := os.Stat(ctl + "/hot_add"); err != nil {
		t.Skipf("the kernel has no zram-control: %v", err)
	}
	r := startReal(t, Options{})
	b, err := os.ReadFile(ctl + "/hot_add") // reading it adds a device
	must(t, err)
	id := strings.TrimSpace(string(b))
	name := "zram" + id
	t.Cleanup(func() {
		if _, err := os.Stat("/sys/block/" + name); err == nil {
			if err := os.WriteFile(ctl+"/hot_remove", []byte(id), 0); err != nil {
				t.Errorf("%s left behind: %v", name, err)
			}
		}
	})
	num, err := os.ReadFile("/sys/block/" + name + "/dev")
	must(t, err)
	want := "block " + strings.TrimSpace(string(num)) + " 0660 0:6"
	until(t, wait, name+" registered", func() bool { return r.node(name) == want })
	must(t, os.WriteFile(ctl+"/hot_remove", []byte(id), 0))
	until(t, wait, name+" unregistered", func() bool { return r.node(name) == "" })
}
