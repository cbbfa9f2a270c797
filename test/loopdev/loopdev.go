// Package loopdev makes and removes real loop devices for tests that act
// on the kernel (hotplug, uevents, autoload): LOOP_CTL_ADD and
// LOOP_CTL_REMOVE on /dev/loop-control.
//
// Indexes are picked at random in [100, 1000), free when picked, and never
// handed out twice in one process: a name a test has looked up before may
// still have a negative entry in some kernel's dcache, so a reused index
// would not be a fresh device. Other test processes may make loop devices
// at the same time; a pick taken meanwhile is retried.
package loopdev

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// Deadline bounds how long the kernel may keep a removed loop device busy.
const Deadline = 20 * time.Second

// Need skips t where the kernel has no loop-control or no sysfs.
func Need(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("no loop-control: %v", err)
	}
	if _, err := os.Stat("/sys/dev/block"); err != nil {
		t.Skipf("no sysfs: %v", err)
	}
}

// Ctl runs LOOP_CTL_ADD or LOOP_CTL_REMOVE (req) of index i.
func Ctl(req uintptr, i int) error {
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

// Exists reports whether loop i is a block device in sysfs now.
func Exists(i int) bool {
	_, err := os.Stat(fmt.Sprintf("/sys/block/loop%d", i))
	return err == nil
}

var (
	mu     sync.Mutex
	issued = map[int]bool{}
)

// Free returns an index ≥ 100 that no loop device has now and that this
// process has not been given before.
func Free(t testing.TB) int {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		i := 100 + rand.IntN(900)
		if issued[i] {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/sys/block/loop%d", i)); errors.Is(err, fs.ErrNotExist) {
			issued[i] = true
			return i
		}
	}
	t.Fatal("no free loop index")
	return 0
}

// RemoveAtCleanup removes loop i when t ends, if it is there then.
func RemoveAtCleanup(t testing.TB, i int) {
	t.Cleanup(func() {
		if !Exists(i) {
			return
		}
		if err := remove(i); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.ENXIO) {
			t.Errorf("loop%d left behind: %v", i, err)
		}
	})
}

// Add makes a new loop device and returns its index; it is removed when t
// ends.
func Add(t testing.TB) int {
	t.Helper()
	for range 100 {
		i := Free(t)
		err := Ctl(unix.LOOP_CTL_ADD, i)
		if errors.Is(err, unix.EEXIST) {
			continue // taken meanwhile by another process
		}
		if err != nil {
			t.Fatalf("LOOP_CTL_ADD %d: %v", i, err)
		}
		RemoveAtCleanup(t, i)
		return i
	}
	t.Fatal("no loop index could be added")
	return 0
}

// Remove removes loop i, waiting out EBUSY for at most Deadline.
func Remove(t testing.TB, i int) {
	t.Helper()
	if err := remove(i); err != nil {
		t.Fatalf("LOOP_CTL_REMOVE %d: %v", i, err)
	}
}

func remove(i int) error {
	var err error
	harness.Poll(Deadline, 2*time.Millisecond, func() bool {
		err = Ctl(unix.LOOP_CTL_REMOVE, i)
		return !errors.Is(err, unix.EBUSY)
	})
	return err
}

// Number is loop i's device number as sysfs gives it ("7:123").
func Number(t testing.TB, i int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/dev", i))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
