package integration

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"
)

// tmpfsFails lists the posixtest cases that fail on tmpfs itself in this
// environment; they are skipped on both, since the rule is that every case
// passing on tmpfs passes on devfsd.
var tmpfsFails = map[string]string{
	// fcntl(F_SETLK) on a second fd of the same process succeeds on
	// tmpfs as POSIX says (locks belong to the process); the case expects
	// EAGAIN, the behaviour of a FUSE server that implements SETLK.
	"FcntlFlockLocksFile": "fails on tmpfs too: POSIX record locks are per process",
}

// devfsdSkips lists what devfsd deliberately does not do.
var devfsdSkips = map[string]string{
	"XAttr":      "extended attributes are not real on a device namespace: ENOTSUP",
	"XAttrLarge": "extended attributes are not real on a device namespace: ENOTSUP",
	// Tmpfile skips itself on devfsd: O_TMPFILE is EOPNOTSUPP.
}

// The go-fuse posixtest suite on the mount, each case in a fresh
// directory of its own (a test may leave files behind).
func TestPosixSuite(t *testing.T) {
	d := start(t, opts{args: []string{"--max-file-size=64MiB", "--max-bytes=256MiB"}})
	runPosix(t, d.mnt, devfsdSkips)
}

// The same suite on tmpfs, the reference: what fails there is listed, not
// held against devfsd.
func TestPosixSuiteOnTmpfs(t *testing.T) {
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755,size=512m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	runPosix(t, dir, nil)
}

func runPosix(t *testing.T, root string, skips map[string]string) {
	var names []string
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if why, ok := tmpfsFails[name]; ok {
				t.Skip(why)
			}
			if why, ok := skips[name]; ok {
				t.Skip(why)
			}
			dir := filepath.Join(root, "posix", name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			posixtest.All[name](t, dir)
		})
	}
}
