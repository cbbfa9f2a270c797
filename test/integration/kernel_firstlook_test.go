package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
	"github.com/devfsd/devfsd/test/loopdev"
)

// The first lstat after LOOP_CTL_ADD returns sees the new device, on the
// mount and in a view: the kernel queued the device's uevent before the
// ioctl returned, and the lookup miss applies what is queued before it
// answers, whether or not the daemon's reader has run. Each device's name
// is fresh, so neither kernel has an entry for it: the lstat is a LOOKUP.
func TestKernelDevicesFirstLstatAfterAdd(t *testing.T) {
	loopdev.Need(t)
	vdir := viewDir(t, "kernel-first")
	vfile := writeFile(t, t.TempDir(), "v.yaml", "mountpoint: "+vdir+"\n")
	d := startCtl(t, "--devices=kernel", "--view="+vfile, "--views-dir="+os.TempDir())
	for k := range 10 {
		dir := []string{d.mnt, vdir}[k%2]
		i := loopdev.Add(t) // an index this process never used: no kernel has an entry for it
		name := fmt.Sprintf("loop%d", i)
		got, err := devOf(filepath.Join(dir, name)) // the first lstat
		num, rerr := os.ReadFile(fmt.Sprintf("/sys/block/%s/dev", name))
		if rerr != nil {
			t.Fatal(rerr)
		}
		if want := "block " + strings.TrimSpace(string(num)); err != nil || got != want {
			t.Fatalf("the first lstat of %s after LOOP_CTL_ADD: %q %v, want %s", filepath.Join(dir, name), got, err, want)
		}
		loopdev.Remove(t, i)
		for _, m := range []string{d.mnt, vdir} {
			p := filepath.Join(m, name)
			harness.Until(t, kernelDeadline, p+" gone after LOOP_CTL_REMOVE", func() bool { return statErr(p) == unix.ENOENT })
		}
	}
}
