package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
	"github.com/devfsd/devfsd/test/loopdev"
)

// Issue 18 through a real mount: the daemon with `--devices=kernel`
// shows the machine's devices, follows hotplug (loop devices made and
// removed with LOOP_CTL_ADD and LOOP_CTL_REMOVE at random free indexes
// ≥ 100, removed in t.Cleanup), invents nothing, and loads modules on a
// miss through modules.devname and the modprobe program.

const kernelDeadline = 20 * time.Second

// devOf lstats p: "block 7:123", or the error.
func devOf(p string) (string, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return "", err
	}
	kind := map[uint32]string{unix.S_IFCHR: "char", unix.S_IFBLK: "block"}[st.Mode&unix.S_IFMT]
	return fmt.Sprintf("%s %d:%d", kind, unix.Major(st.Rdev), unix.Minor(st.Rdev)), nil
}

func TestKernelDevicesHotplug(t *testing.T) {
	loopdev.Need(t)
	vdir := viewDir(t, "kernel")
	vfile := writeFile(t, t.TempDir(), "v.yaml", "mountpoint: "+vdir+"\n")
	// Hour-long caches: what the mounts show after a uevent is what the
	// daemon told their kernels, nothing expires by itself.
	d := startCtl(t, "--devices=kernel", "--view="+vfile, "--views-dir="+os.TempDir(),
		"--entry-timeout=1h", "--attr-timeout=1h", "--negative-timeout=1h")

	// This machine has no GPU and no SCSI disk: nothing is invented.
	for _, name := range []string{"nvidia0", "nvidiactl", "sda", "sda1", "dri/card0", "snd/controlC0"} {
		if err := statErr(filepath.Join(d.mnt, name)); err != unix.ENOENT {
			t.Errorf("stat %s: %v, want ENOENT", name, err)
		}
	}
	if got, err := devOf(filepath.Join(d.mnt, "null")); err != nil || got != "char 1:3" {
		t.Errorf("null: %q %v", got, err)
	}

	i := loopdev.Free(t)
	name := fmt.Sprintf("loop%d", i)
	// The kernels of both mounts cache the miss first (for an hour).
	for _, dir := range []string{d.mnt, vdir} {
		if err := statErr(filepath.Join(dir, name)); err != unix.ENOENT {
			t.Fatalf("%s before LOOP_CTL_ADD: %v", name, err)
		}
	}
	if err := loopdev.Ctl(unix.LOOP_CTL_ADD, i); err != nil {
		t.Fatalf("LOOP_CTL_ADD %d: %v", i, err)
	}
	loopdev.RemoveAtCleanup(t, i)
	num, err := os.ReadFile(fmt.Sprintf("/sys/block/%s/dev", name))
	if err != nil {
		t.Fatal(err)
	}
	want := "block " + strings.TrimSpace(string(num))
	for _, dir := range []string{d.mnt, vdir} {
		p := filepath.Join(dir, name)
		harness.Until(t, kernelDeadline, p+" after LOOP_CTL_ADD", func() bool { got, _ := devOf(p); return got == want })
	}
	var before unix.Stat_t
	if err := unix.Lstat(filepath.Join(d.mnt, name), &before); err != nil {
		t.Fatal(err)
	}

	// echo add: idempotent (the same node); echo change: a CHANGE event.
	ev := watchKinds(t, d)
	write := func(action string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join("/sys/dev/block", strings.TrimSpace(string(num)), "uevent"), []byte(action), 0); err != nil {
			t.Fatal(err)
		}
	}
	write("add")
	write("change")
	ev.waitFor(t, "CHANGE", name)
	var after unix.Stat_t
	if err := unix.Lstat(filepath.Join(d.mnt, name), &after); err != nil || after.Ino != before.Ino {
		t.Fatalf("after echo add: %v, inode %d, was %d", err, after.Ino, before.Ino)
	}
	if n := ev.count("REGISTER", name); n != 0 {
		t.Errorf("echo add registered %s again (%d REGISTER)", name, n)
	}

	if err := loopdev.Ctl(unix.LOOP_CTL_REMOVE, i); err != nil {
		t.Fatalf("LOOP_CTL_REMOVE %d: %v", i, err)
	}
	for _, dir := range []string{d.mnt, vdir} {
		p := filepath.Join(dir, name)
		harness.Until(t, kernelDeadline, p+" gone after LOOP_CTL_REMOVE", func() bool { return statErr(p) == unix.ENOENT })
	}
}

// A name a user made through the mount keeps its node when the kernel
// adds a device of that name, and when the kernel removes it.
func TestKernelDevicesCollisionKeepsTheUsersNode(t *testing.T) {
	loopdev.Need(t)
	d := startCtl(t, "--devices=kernel")
	i := loopdev.Free(t)
	name := fmt.Sprintf("loop%d", i)
	p := filepath.Join(d.mnt, name)
	if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	ev := watchKinds(t, d)
	if err := loopdev.Ctl(unix.LOOP_CTL_ADD, i); err != nil {
		t.Fatal(err)
	}
	loopdev.RemoveAtCleanup(t, i)
	// The daemon saw the add (its log says so) and kept the user's node.
	harness.Until(t, kernelDeadline, "the collision logged", func() bool {
		return strings.Contains(d.out.String(), "taken by a node devfsd did not register") && strings.Contains(d.out.String(), name)
	})
	if got, err := devOf(p); err != nil || got != "char 1:3" {
		t.Fatalf("%s: %q %v, want the user's char 1:3", name, got, err)
	}
	if err := loopdev.Ctl(unix.LOOP_CTL_REMOVE, i); err != nil {
		t.Fatal(err)
	}
	harness.Until(t, kernelDeadline, "the remove seen", func() bool {
		_, err := os.Stat(fmt.Sprintf("/sys/block/%s", name))
		return err != nil
	})
	if got, err := devOf(p); err != nil || got != "char 1:3" {
		t.Fatalf("%s after the kernel's remove: %q %v", name, got, err)
	}
	if n := ev.count("UNREGISTER", name); n != 0 {
		t.Fatalf("the user's node was unregistered")
	}
}

// loopctlSource is the test's modprobe: for module loop it makes loop
// device KERNEL_TEST_LOOP, for any other nothing, logging each run's
// module to KERNEL_TEST_LOG. Built from source with the standard library
// only.
const loopctlSource = `package main

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
)

func main() {
	if len(os.Args) != 4 || os.Args[1] != "-q" || os.Args[2] != "--" {
		fmt.Fprintln(os.Stderr, "usage: modprobe -q -- MODULE")
		os.Exit(2)
	}
	f, err := os.OpenFile(os.Getenv("KERNEL_TEST_LOG"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		os.Exit(3)
	}
	fmt.Fprintln(f, os.Args[3])
	f.Close()
	if os.Args[3] != "loop" {
		return // any other module: loaded, and it makes nothing
	}
	i, _ := strconv.Atoi(os.Getenv("KERNEL_TEST_LOOP"))
	fd, err := syscall.Open("/dev/loop-control", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		os.Exit(4)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), 0x4C80, uintptr(i)); e != 0 {
		fmt.Fprintln(os.Stderr, "LOOP_CTL_ADD:", e)
		os.Exit(1)
	}
}
`

// modprobe builds the test's modprobe and a wrapper script setting env.
func modprobe(t *testing.T, env ...string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "loopctl.go")
	if err := os.WriteFile(src, []byte(loopctlSource), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "loopctl")
	if out, err := exec.Command("go", "build", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	script := filepath.Join(dir, "modprobe")
	body := fmt.Sprintf("#!/bin/sh\nexec env %s %s \"$@\"\n", strings.Join(env, " "), bin)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script
}

// Module autoload: stat of a name modules.devname lists runs the modprobe
// program and waits for the kernel's add; 200 concurrent stats run it
// once; a program that makes nothing ends at loader_timeout with ENOENT.
func TestKernelDevicesAutoload(t *testing.T) {
	loopdev.Need(t)
	i := loopdev.Free(t)
	loopdev.RemoveAtCleanup(t, i)
	name := fmt.Sprintf("loop%d", i)
	dir := t.TempDir()
	runs := filepath.Join(dir, "runs")
	devname := writeFile(t, dir, "modules.devname", fmt.Sprintf("# test\nloop %s b7:%d\nnothing nothing0 c10:250\n", name, i))
	prog := modprobe(t, "KERNEL_TEST_LOOP="+fmt.Sprint(i), "KERNEL_TEST_LOG="+runs)
	const loaderTimeout = 2 * time.Second
	d := startCtl(t, "--devices=kernel", "--modules-devname="+devname, "--modprobe="+prog,
		"--loader-timeout="+loaderTimeout.String())

	const stats = 200
	var wg sync.WaitGroup
	errs := make(chan error, stats)
	for range stats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := devOf(filepath.Join(d.mnt, name))
			if err == nil && got != fmt.Sprintf("block 7:%d", i) {
				err = fmt.Errorf("stat answered %s", got)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := os.ReadFile(runs); string(b) != "loop\n" {
		t.Fatalf("modprobe runs: %q, want one", b)
	}

	// nothing0: the program runs and makes nothing.
	start := time.Now()
	err := statErr(filepath.Join(d.mnt, "nothing0"))
	if took := time.Since(start); err != unix.ENOENT || took < loaderTimeout {
		t.Fatalf("stat nothing0: %v after %v; want ENOENT after loader_timeout %v", err, took, loaderTimeout)
	}
	// No entry: ENOENT at once, nothing run.
	start = time.Now()
	if err := statErr(filepath.Join(d.mnt, "nvidia0")); err != unix.ENOENT {
		t.Fatalf("stat nvidia0: %v", err)
	}
	if took := time.Since(start); took >= loaderTimeout {
		t.Fatalf("stat nvidia0 took %v", took)
	}
	if b, _ := os.ReadFile(runs); string(b) != "loop\nnothing\n" {
		t.Fatalf("modprobe runs: %q", b)
	}
}

// kinds records the control socket's events by kind and path.
type kinds struct {
	mu   sync.Mutex
	seen map[string]int // "KIND path" -> count
	more chan struct{}
}

func watchKinds(t *testing.T, d *ctlDaemon) *kinds {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := d.c.Events(ctx, 4096)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	k := &kinds{seen: map[string]int{}, more: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			rec, err := st.Next()
			if err != nil {
				return
			}
			if rec.Type == "event" {
				k.mu.Lock()
				k.seen[rec.Kind+" "+rec.Path]++
				close(k.more)
				k.more = make(chan struct{})
				k.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); st.Close(); <-done })
	return k
}

func (k *kinds) count(kind, path string) int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.seen[kind+" "+path]
}

func (k *kinds) waitFor(t *testing.T, kind, path string) {
	t.Helper()
	deadline := time.NewTimer(kernelDeadline)
	defer deadline.Stop()
	for {
		k.mu.Lock()
		n, more := k.seen[kind+" "+path], k.more
		k.mu.Unlock()
		if n > 0 {
			return
		}
		select {
		case <-more:
		case <-deadline.C:
			t.Fatalf("no %s of %s within %v", kind, path, kernelDeadline)
		}
	}
}
