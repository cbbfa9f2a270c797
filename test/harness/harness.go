// Package harness mounts file systems for the integration tests and
// benchmarks of test/: each backend is mounted on a fresh directory, FUSE
// servers run as separate processes (so a test's system calls on the mount
// can never deadlock against the server in its own process), and every mount
// is always taken down again — process stopped, mount lazily detached,
// directory removed — even when a test fails or panics.
//
// Backends, behind one interface:
//
//	tmpfs   the kernel's tmpfs, mounted with mount(2): the reference
//	barefs  a bare go-fuse in-memory tree (test/bench/barefs): the baseline
//	devfsd  `devfsd mount [flags] DIR` (cmd/devfsd): the system under test
//
// and, outside Backends() (ByName("rawfloor"), RawFloor()):
//
//	rawfloor  barefs -raw: a go-fuse raw server that only answers LOOKUP and
//	          GETATTR of the populated tree, doing no work: the floor for
//	          server CPU per request on the stat benchmarks
//
// Binaries are built once per process (Build), into a temporary directory
// that Main or Cleanup removes. All mount points live under one base
// directory per process, so CheckNoMounts can prove nothing was left behind.
//
// Tests use MountT, which registers the teardown with t.Cleanup and turns
// "this backend cannot run here yet" into t.Skip with the reason. Programs
// (the benchmark) use Start and Mount.Close.
package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Options configure one mount. Zero values mean the backend's defaults,
// except the timeouts, which are passed explicitly when Timeouts is set.
type Options struct {
	// Timeouts, when set, makes the FUSE backends use EntryTimeout,
	// AttrTimeout and NegativeTimeout for the kernel's caches. tmpfs has
	// no such caches and ignores them.
	Timeouts        bool
	EntryTimeout    time.Duration
	AttrTimeout     time.Duration
	NegativeTimeout time.Duration

	// ReaddirPlus selects READDIRPLUS on FUSE backends that can choose:
	// "" (the backend's default), "on" or "off".
	ReaddirPlus string

	// Populate makes, before Start returns, top-level directories each
	// holding N empty regular files named PopulateName(0..N-1). Backends
	// that can do it server-side (barefs, devfsd) do so before mounting, so the
	// kernel has nothing cached; the others get the files through mknod(2)
	// on the mount (Mount.ColdPopulate says which happened).
	Populate []Populate

	// Stats asks the backend to count requests by opcode (Mount.Requests).
	Stats bool

	// DevfsdArgs are extra flags of `devfsd mount` (the devfsd backend
	// only), after the harness's own.
	DevfsdArgs []string
}

// Populate is one directory of Options.Populate.
type Populate struct {
	Dir string
	N   int
}

// PopulateName is the name of the i-th file of a populated directory.
func PopulateName(i int) string { return fmt.Sprintf("f%07d", i) }

// Backend mounts one kind of file system.
type Backend interface {
	// Name is the backend's short name: "tmpfs", "barefs", "devfsd",
	// "rawfloor".
	Name() string
	// FUSE reports whether the backend is a FUSE server (a process).
	FUSE() bool
	// mount mounts on dir, which exists and is empty. On error nothing
	// may be left mounted or running.
	mount(dir string, o Options) (*Mount, error)
}

// UnavailableError is returned by Start when a backend cannot run in this
// tree yet (for devfsd: the binary reports that its FUSE server is not
// built). MountT turns it into t.Skip.
type UnavailableError struct {
	Backend string
	Reason  string
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("backend %s unavailable: %s", e.Backend, e.Reason)
}

// IsUnavailable reports whether err says the backend cannot run yet.
func IsUnavailable(err error) bool {
	var u *UnavailableError
	return errors.As(err, &u)
}

// ErrNoStats is returned by Mount.Requests for backends that do not count
// requests (tmpfs; devfsd mounted without Options.Stats).
var ErrNoStats = errors.New("harness: backend does not report request counts")

var (
	tmpfsBackend  Backend = tmpfs{}
	barefsBackend Backend = barefs{}
	devfsdBackend Backend = devfsd{}
	rawBackend    Backend = rawfloor{}
)

// Tmpfs, Barefs and Devfsd return the three backends.
func Tmpfs() Backend  { return tmpfsBackend }
func Barefs() Backend { return barefsBackend }
func Devfsd() Backend { return devfsdBackend }

// RawFloor returns the rawfloor backend (barefs -raw). It serves only the
// stat of a populated tree (no readdir, no changes), so it is not among
// Backends(); ByName finds it.
func RawFloor() Backend { return rawBackend }

// Backends returns the general-purpose backends, the reference (tmpfs)
// first. RawFloor, which serves only stats, is not among them.
func Backends() []Backend { return []Backend{tmpfsBackend, barefsBackend, devfsdBackend} }

// ByName returns the backend called name: one of Backends() or "rawfloor".
func ByName(name string) (Backend, error) {
	for _, b := range append(Backends(), rawBackend) {
		if b.Name() == name {
			return b, nil
		}
	}
	return nil, fmt.Errorf("harness: no backend %q (have tmpfs, barefs, devfsd, rawfloor)", name)
}

// The per-process base directory: every mount point and every built binary
// lives under it.
var (
	baseOnce sync.Once
	baseDir  string
	baseErr  error
	mountSeq int
	seqMu    sync.Mutex
)

// Base returns this process's base directory, making it on first use.
func Base() (string, error) {
	baseOnce.Do(func() {
		baseDir, baseErr = os.MkdirTemp("", "devfsd-harness-")
		if baseErr == nil {
			// Resolve symlinks once: mountinfo names real paths.
			baseDir, baseErr = filepath.EvalSymlinks(baseDir)
		}
	})
	return baseDir, baseErr
}

// Start mounts backend b on a fresh directory and waits until the mount is
// live and populated. The caller must Close the mount.
func Start(b Backend, o Options) (*Mount, error) {
	base, err := Base()
	if err != nil {
		return nil, err
	}
	seqMu.Lock()
	mountSeq++
	dir := filepath.Join(base, fmt.Sprintf("mnt-%s-%d", b.Name(), mountSeq))
	seqMu.Unlock()
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	m, err := b.mount(dir, o)
	if err != nil {
		// Never RemoveAll: if anything were still mounted there it
		// would descend into the mount.
		os.Remove(dir)
		return nil, err
	}
	m.Backend = b.Name()
	m.Dir = dir
	if !m.ColdPopulate {
		if err := populateBySyscalls(dir, o.Populate); err != nil {
			m.Close()
			return nil, fmt.Errorf("%s: populate: %w", b.Name(), err)
		}
	}
	return m, nil
}

// Cleanup removes what this process built under its base directory and
// reports any mount still there. Main calls it; programs call it on exit.
func Cleanup() error {
	base, err := Base()
	if err != nil {
		return err
	}
	left, err := MountsUnder(base)
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("harness: mounts left behind: %v", left)
	}
	return os.RemoveAll(base)
}
