package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// The first lstat after LOOP_CTL_ADD returns sees the new device, on the
// mount and in a view: the kernel queued the device's uevent before the
// ioctl returned, and the lookup miss applies what is queued before it
// answers, whether or not the daemon's reader has run. Each device's name
// is fresh, so neither kernel has an entry for it: the lstat is a LOOKUP.
func TestKernelDevicesFirstLstatAfterAdd(t *testing.T) {
	needLoopControl(t)
	vdir := viewDir(t, "kernel-first")
	vfile := writeFile(t, t.TempDir(), "v.yaml", "mountpoint: "+vdir+"\n")
	d := startCtl(t, "--devices=kernel", "--view="+vfile, "--views-dir="+os.TempDir())
	used := map[int]bool{} // a name met before has a negative entry: not fresh
	for k := range 10 {
		dir := []string{d.mnt, vdir}[k%2]
		i := newFreshLoop(t, used)
		name := fmt.Sprintf("loop%d", i)
		got, err := devOf(filepath.Join(dir, name)) // the first lstat
		num, rerr := os.ReadFile(fmt.Sprintf("/sys/block/%s/dev", name))
		if rerr != nil {
			t.Fatal(rerr)
		}
		if want := "block " + strings.TrimSpace(string(num)); err != nil || got != want {
			t.Fatalf("the first lstat of %s after LOOP_CTL_ADD: %q %v, want %s", filepath.Join(dir, name), got, err, want)
		}
		var rmErr error
		if !harness.Poll(kernelDeadline, 2*time.Millisecond, func() bool {
			rmErr = loopCtl(unix.LOOP_CTL_REMOVE, i)
			return !errors.Is(rmErr, unix.EBUSY)
		}) || rmErr != nil {
			t.Fatalf("LOOP_CTL_REMOVE %d: %v", i, rmErr)
		}
		for _, m := range []string{d.mnt, vdir} {
			p := filepath.Join(m, name)
			harness.Until(t, kernelDeadline, p+" gone after LOOP_CTL_REMOVE", func() bool { return statErr(p) == unix.ENOENT })
		}
	}
}

// newFreshLoop makes a loop device whose index is not in used, and adds
// it to used. A used index it meets again is left made until the test
// ends, so that the next pick is another.
func newFreshLoop(t *testing.T, used map[int]bool) int {
	t.Helper()
	for range 100 {
		i := newLoop(t)
		if !used[i] {
			used[i] = true
			return i
		}
		// i stays made (newLoop's cleanup removes it) so it is not picked again
	}
	t.Fatal("no fresh loop index")
	return 0
}
