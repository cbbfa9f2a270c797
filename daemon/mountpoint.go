package daemon

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// probeTimeout bounds the statfs that asks a FUSE mount's server whether
// it is there.
const probeTimeout = 2 * time.Second

// maxStacked bounds how many dead mounts stacked on one directory are
// cleared.
const maxStacked = 16

// clearMountpoint makes dir ready to be mounted on. A FUSE mount on dir
// whose server is gone (a daemon killed without a successor) is cleared
// with a lazy unmount, logged, as many times as such mounts are stacked
// there. Anything else mounted on dir — a tmpfs, a devtmpfs, a live FUSE
// mount such as another devfsd — is refused with an error naming it,
// unless mountOver is set.
//
// Whether a FUSE mount is dead is asked of the kernel, not of a cache:
// the mount table says what is mounted on dir, and statfs(2), which FUSE
// always forwards to the server, fails with ENOTCONN (or ECONNABORTED)
// once the connection has lost its server; the connection's
// /sys/fs/fuse/connections entry is logged beside it.
func clearMountpoint(dir string, mountOver bool, log *zap.Logger) error {
	for i := 0; i < maxStacked; i++ {
		ms, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) { return m.Mountpoint != dir, false })
		if err != nil {
			return fmt.Errorf("mountpoint %s: reading the mount table: %w", dir, err)
		}
		if len(ms) == 0 {
			return nil
		}
		top := ms[len(ms)-1] // the last mounted is the one on top
		what := fmt.Sprintf("%s (type %s, source %s)", dir, top.FSType, top.Source)
		if isFUSE(top.FSType) {
			dead, why := fuseDead(dir)
			if dead {
				conn := fuseConnection(top)
				below := mountsBelow(dir) // its pts and shm: the lazy unmount takes them too
				if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
					return fmt.Errorf("mountpoint %s: a dead FUSE mount is there (%s) and cannot be cleared: %w", dir, why, err)
				}
				log.Warn("cleared a dead FUSE mount whose server is gone (lazy unmount)",
					zap.String("mountpoint", dir), zap.String("fstype", top.FSType), zap.String("source", top.Source),
					zap.String("connection", conn), zap.String("probe", why), zap.Strings("with", below))
				continue
			}
			what += ", " + why
		}
		if mountOver {
			log.Warn("mounting over a live mount (--mount-over)", zap.String("mountpoint", dir),
				zap.String("fstype", top.FSType), zap.String("source", top.Source))
			return nil
		}
		return fmt.Errorf("mountpoint %s: %s is mounted there and live; unmount it, or pass --mount-over to mount over it", dir, what)
	}
	return fmt.Errorf("mountpoint %s: more than %d dead mounts are stacked there", dir, maxStacked)
}

// mountsBelow lists what is mounted beneath dir (not on it), for a log.
func mountsBelow(dir string) []string {
	ms, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		return []string{"(the mount table: " + err.Error() + ")"}
	}
	var r []string
	for _, m := range ms {
		if m.Mountpoint != dir {
			r = append(r, m.Mountpoint+" ("+m.FSType+")")
		}
	}
	return r
}

func isFUSE(fstype string) bool {
	return fstype == "fuse" || fstype == "fuseblk" || strings.HasPrefix(fstype, "fuse.") || strings.HasPrefix(fstype, "fuseblk.")
}

// fuseDead asks the server of the FUSE mount on dir for statfs: dead if
// the kernel answers that it has none. A server that does not answer in
// probeTimeout is taken as alive (busy); why says what was seen.
func fuseDead(dir string) (dead bool, why string) {
	errc := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		errc <- unix.Statfs(dir, &st)
	}()
	select {
	case err := <-errc:
		switch {
		case errors.Is(err, unix.ENOTCONN), errors.Is(err, unix.ECONNABORTED):
			return true, "statfs: " + err.Error()
		case err != nil:
			return false, "statfs: " + err.Error()
		}
		return false, "its server answers"
	case <-time.After(probeTimeout):
		return false, fmt.Sprintf("its server does not answer statfs within %v", probeTimeout)
	}
}

// fuseConnection describes the kernel's FUSE connection of m: its
// /sys/fs/fuse/connections directory and its waiting requests.
func fuseConnection(m *mountinfo.Info) string {
	id := strconv.Itoa(m.Major<<20 | m.Minor)
	dir := filepath.Join("/sys/fs/fuse/connections", id)
	b, err := os.ReadFile(filepath.Join(dir, "waiting"))
	if err != nil {
		return dir + " (unreadable: " + err.Error() + ")"
	}
	return dir + " (waiting " + strings.TrimSpace(string(b)) + ")"
}
