package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"golang.org/x/sys/unix"
)

// tmpfs is the kernel's tmpfs, mounted in-process with mount(2). It has no
// server process; its "cache" is the file system itself, so a populated
// tmpfs is always cold.
type tmpfs struct{}

func (tmpfs) Name() string { return "tmpfs" }
func (tmpfs) FUSE() bool   { return false }

func (tmpfs) mount(dir string, o Options) (*Mount, error) {
	// Flags 0: dev and suid, like the devfsd mount.
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755,size=1g"); err != nil {
		return nil, fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	m := &Mount{ColdPopulate: true}
	if err := populateBySyscalls(dir, o.Populate); err != nil {
		unix.Unmount(dir, unix.MNT_DETACH)
		return nil, err
	}
	return m, nil
}

// BarefsPkg is the import path of the barefs server.
const BarefsPkg = "github.com/devfsd/devfsd/test/bench/barefs"

// barefs is the bare go-fuse tree of test/bench/barefs, as a process.
type barefs struct{}

func (barefs) Name() string { return "barefs" }
func (barefs) FUSE() bool   { return true }

func (barefs) mount(dir string, o Options) (*Mount, error) {
	return mountBarefs("barefs", dir, o, false)
}

// rawfloor is barefs -raw: a minimal fuse.RawFileSystem that answers only
// LOOKUP and GETATTR of the Options.Populate tree, computed from the
// request (no locks, no allocation), with barefs's mount options. It is the
// floor for server CPU per request: what go-fuse's request loop and the
// kernel cost with nothing behind them. It has no readdir and takes no
// changes: it is for the stat benchmarks only, and not in Backends().
type rawfloor struct{}

func (rawfloor) Name() string { return "rawfloor" }
func (rawfloor) FUSE() bool   { return true }

func (rawfloor) mount(dir string, o Options) (*Mount, error) {
	return mountBarefs("rawfloor", dir, o, true)
}

// mountBarefs runs the barefs binary on dir, with -raw if raw.
func mountBarefs(name, dir string, o Options, raw bool) (*Mount, error) {
	bin := os.Getenv("BAREFS_BIN")
	if bin == "" {
		var err error
		if bin, err = Build(BarefsPkg); err != nil {
			return nil, err
		}
	}
	var args []string
	if o.Timeouts {
		args = append(args,
			"-entry-timeout="+o.EntryTimeout.String(),
			"-attr-timeout="+o.AttrTimeout.String(),
			"-negative-timeout="+o.NegativeTimeout.String())
	}
	switch o.ReaddirPlus {
	case "on":
		args = append(args, "-readdirplus=true")
	case "off":
		args = append(args, "-readdirplus=false")
	}
	m := &Mount{ColdPopulate: true}
	if len(o.Populate) > 0 {
		var ps []string
		for _, p := range o.Populate {
			ps = append(ps, fmt.Sprintf("%s=%d", p.Dir, p.N))
		}
		args = append(args, "-populate="+strings.Join(ps, ","))
	}
	if o.Stats {
		m.statsPath = dir + ".stats.json"
		args = append(args, "-stats="+m.statsPath)
	}
	if raw {
		args = append(args, "-raw")
	}
	args = append(args, dir)
	p, err := spawn(exec.Command(bin, args...))
	if err != nil {
		return nil, err
	}
	m.proc = p
	if err := waitMounted(dir, p); err != nil {
		m.Dir = dir
		m.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return m, nil
}

// DevfsdPkg is the import path of the devfsd daemon.
const DevfsdPkg = "github.com/devfsd/devfsd/cmd/devfsd"

// devfsd runs `devfsd mount [flags] DIR`, the command line of issue 4:
//
//	devfsd mount --entry-timeout=D --attr-timeout=D --negative-timeout=D
//	             [--readdirplus=on|off] [--socket=DIR.sock] DIR
//
// Options.Populate is done before mounting through the test hook
// DEVFSD_TEST_POPULATE (daemon/testhooks.go, built by Build), so it is cold as barefs's
// is; Options.Stats gives the daemon a control socket beside the mount
// point, whose /metrics Mount.Requests scrapes.
//
// It is unavailable (Start returns an UnavailableError, MountT skips) only
// while cmd/devfsd is absent from the tree or `devfsd mount` exits saying
// the FUSE server is not built yet. Any other failure to mount is an error.
// DEVFSD_BIN names a prebuilt binary instead of building cmd/devfsd.
type devfsd struct{}

func (devfsd) Name() string { return "devfsd" }
func (devfsd) FUSE() bool   { return true }

// notBuilt matches what `devfsd mount` prints while the FUSE server of
// issue 4 has not landed ("... not yet ...", "not built", "not implemented").
var notBuilt = regexp.MustCompile(`(?i)\bnot (yet|built|implemented)\b`)

func (devfsd) mount(dir string, o Options) (*Mount, error) {
	bin := os.Getenv("DEVFSD_BIN")
	if bin == "" {
		root, err := ModuleRoot()
		if err != nil {
			return nil, err
		}
		if _, err := os.Stat(filepath.Join(root, "cmd", "devfsd")); os.IsNotExist(err) {
			return nil, &UnavailableError{"devfsd", "cmd/devfsd is not in the tree yet (issue 4)"}
		}
		if bin, err = Build(DevfsdPkg); err != nil {
			return nil, err
		}
	}
	// The built-in catalogue, not this machine's devices: the same tree
	// on every machine, so that figures compare.
	args := []string{"mount", "--devices=catalogue"}
	if o.Timeouts {
		args = append(args,
			"--entry-timeout="+o.EntryTimeout.String(),
			"--attr-timeout="+o.AttrTimeout.String(),
			"--negative-timeout="+o.NegativeTimeout.String())
	}
	if o.ReaddirPlus != "" {
		args = append(args, "--readdirplus="+o.ReaddirPlus)
	}
	m := &Mount{}
	if o.Stats {
		// The request counts are scraped from the control socket's
		// /metrics (devfsd_fuse_request_duration_seconds_count{op}).
		m.socket = dir + ".sock"
		args = append(args, "--socket="+m.socket)
	}
	args = append(args, dir)
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/" // never the mount, nor anything under the test's tree
	if len(o.Populate) > 0 {
		// Registered in the namespace before mounting (a test hook of
		// cmd/devfsd), so the kernel has nothing cached, as for barefs.
		var ps []string
		for _, p := range o.Populate {
			ps = append(ps, fmt.Sprintf("%s=%d", p.Dir, p.N))
		}
		cmd.Env = append(os.Environ(), "DEVFSD_TEST_POPULATE="+strings.Join(ps, ","))
		m.ColdPopulate = true
	}
	p, err := spawn(cmd)
	if err != nil {
		return nil, err
	}
	m.proc = p
	if err := waitMounted(dir, p); err != nil {
		m.Dir = dir
		m.Close()
		if e, ok := err.(*earlyExit); ok {
			for _, l := range strings.Split(e.out, "\n") {
				if notBuilt.MatchString(l) {
					return nil, &UnavailableError{"devfsd", "`devfsd mount` says: " + strings.TrimSpace(l)}
				}
			}
		}
		return nil, fmt.Errorf("devfsd: %w", err)
	}
	return m, nil
}
