package helper

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Who is the helper's descendant
//
// A FUSE request carries the calling thread's id; the helper is a process
// and its descendants are processes, so the question is: does the thread's
// process, or a parent of it, up the live parent links, reach the attached
// helper? Package lookup asks it only where the answer changes what a
// request does (a miss, a change that would wait; never a hit, a listing
// or an attribute request), and the control socket for a change's caller.
//
// How. pidfdDescends walks the parent links through pidfds: pidfd_open
// of the thread (PIDFD_THREAD, Linux 6.9), PIDFD_GET_INFO (Linux 6.13)
// for its process and parent, then the same for each parent, at most
// maxDepth steps, until the helper, init (1) or the top of the pid
// namespace (0). No /proc file is opened, and no text parsed. Where the
// kernel lacks either (EINVAL, ENOTTY), isDescendant walks /proc as before
// (Tgid and PPid of /proc/TID/status, then field 4 of /proc/PID/stat),
// and the kernel is not asked again.
//
// Why that, measured (BenchmarkIdentityCandidates in proc_bench_test.go;
// Linux 6.18 on the shared 2-core machine at load average 15, medians of
// 3 runs; ns per answer; the stranger's walk climbs 3 generations to init):
//
//	/proc walk     descendant 53000   stranger 142000
//	pidfd walk     descendant 12000   stranger  59000   0 allocs
//	one /proc/PID/stat read   23000   one /proc/PID/cgroup read  21000
//	getpgid                     260   getsid + pidfd liveness     1050
//
// The one-system-call answers are cheapest but are not "the helper and its
// descendants": a process group can be joined by a process that is not a
// descendant (the other end of `helper | logger` is put in the helper's
// group by the shell), a session is exact only when the helper leads one
// (under systemd it does; run from a shell it does not), and a cgroup
// holds whatever else the service manager put there — each would be a
// guess (DESIGN.md section 2 item 7 forbids one). A verdict cache keyed by
// thread id and start time would still read /proc once per question, and
// must be kept and bounded. The pidfd walk answers the exact question, the
// one the /proc walk answered, 2.5 to 4.5 times cheaper, allocating
// nothing, and without the pid-reuse window below; it is asked only on misses, each of which costs
// a round trip to the helper (hundreds of microseconds) anyway.
//
// Pid reuse. A pid names a process only while it lives (and, dead, until
// it is reaped). The helper's pid is taken from SO_PEERCRED when it
// attaches and forgotten when its session ends: at once when its
// connection closes, and when its pidfd reports the exit. In between, the
// pidfd walk proves every link: after opening a pidfd for a process's
// parent pid it asks the process for its parent again, and the same
// answer means the parent had not exited when the pidfd was opened (the
// children of an exiting process are reparented before its pid is freed),
// so that pidfd is the parent and not a stranger that got its pid; and
// reaching the helper's pid counts only while the pidfd the session opened
// at attach still names an unreaped process — the helper itself, as no
// other process can hold its pid until it is reaped. A stranger that got a
// dead helper's pid is therefore never taken for it
// (TestPidReuseCannotMakeAStrangerTheHelper forces exactly that reuse in a
// pid namespace of its own). The /proc walk, where it must serve, makes
// the same pidfd check when it reaches the helper's pid; only without any
// pidfd (Linux before 5.3) does it compare the helper's start time (field
// 22 of /proc/PID/stat, recorded at attach), which the test shows is not
// enough: a pid reused within the same clock tick (10 ms) has the same
// start time. What the /proc walk leaves open besides is the window
// between reading one link and the next. Either walk follows the kernel's
// live links, so a descendant whose parent died is reparented (to init or
// a subreaper) and stops counting.

// maxDepth bounds the walk.
const maxDepth = 64

// isDescendant is the /proc walk. Reaching pid helper counts only while
// helperFd (if >= 0) names an unreaped process, else only if the process
// there started at helperStart (if not 0).
func isDescendant(pid, helper uint32, helperStart uint64, helperFd int) bool {
	tgid, ppid, ok := tgidAndParent(pid)
	if !ok {
		return false
	}
	p := tgid
	for i := 0; i < maxDepth; i++ {
		if p == helper {
			if helperFd >= 0 {
				return unix.PidfdSendSignal(helperFd, 0, nil, 0) == nil
			}
			if helperStart == 0 {
				return true
			}
			st, err := startTime(p)
			return err == nil && st == helperStart
		}
		if p <= 1 {
			return false
		}
		if i == 0 {
			p = ppid
			continue
		}
		next, ok := parentOf(p)
		if !ok {
			return false
		}
		p = next
	}
	return false
}

// tgidAndParent reads Tgid and PPid from /proc/TID/status.
func tgidAndParent(tid uint32) (tgid, ppid uint32, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return 0, 0, false
	}
	t, ok1 := statusField(b, "Tgid:")
	p, ok2 := statusField(b, "PPid:")
	return t, p, ok1 && ok2
}

func statusField(b []byte, key string) (uint32, bool) {
	i := bytes.Index(b, []byte("\n"+key))
	if i < 0 {
		return 0, false
	}
	rest := b[i+1+len(key):]
	if j := bytes.IndexByte(rest, '\n'); j >= 0 {
		rest = rest[:j]
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(rest)), 10, 32)
	return uint32(v), err == nil
}

// statFields returns the fields of /proc/PID/stat after the command name
// (which may hold spaces and parentheses): fields[0] is field 3 (state).
func statFields(pid uint32) ([][]byte, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, false
	}
	return bytes.Fields(b[i+1:]), true
}

func parentOf(pid uint32) (uint32, bool) {
	f, ok := statFields(pid)
	if !ok || len(f) < 2 {
		return 0, false
	}
	v, err := strconv.ParseUint(string(f[1]), 10, 32) // field 4
	return uint32(v), err == nil
}

// startTime returns field 22 of /proc/PID/stat.
func startTime(pid uint32) (uint64, error) {
	f, ok := statFields(pid)
	if !ok || len(f) < 20 {
		return 0, fmt.Errorf("helper: no start time for pid %d", pid)
	}
	return strconv.ParseUint(string(f[19]), 10, 64)
}

// watchExit calls gone once when process pid exits, watched through a
// pidfd; the returned stop ends the watch (gone is then not called). If
// the pidfd cannot be had (an old kernel, or the process is gone already),
// gone is called at once only when the process is gone.
func watchExit(pid uint32, gone func()) (stop func()) {
	pfd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		if err == unix.ESRCH {
			go gone()
		}
		return func() {}
	}
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		unix.Close(pfd)
		return func() {}
	}
	go func() {
		defer unix.Close(pfd)
		defer unix.Close(p[0])
		fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}, {Fd: int32(p[0]), Events: unix.POLLIN}}
		for {
			_, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			if err != nil || fds[1].Revents != 0 {
				return
			}
			if fds[0].Revents != 0 {
				gone()
				return
			}
		}
	}()
	var once sync.Once
	// stop does not wait for the watcher: it may be called from gone.
	return func() { once.Do(func() { unix.Close(p[1]) }) } // POLLHUP on p[0]
}

// pidfdThread is PIDFD_THREAD (Linux 6.9): pidfd_open of a thread id.
const pidfdThread = unix.O_EXCL

// noPidfdWalk is set once the kernel has refused the pidfd walk (too old
// for PIDFD_THREAD or PIDFD_GET_INFO); the /proc walk answers from then on.
var noPidfdWalk atomic.Bool

// descends answers for a session: the pidfd walk, or where the kernel
// cannot, the /proc walk. helperFd < 0 (no pidfd for the helper): the
// /proc walk.
func descends(tid, helper uint32, helperFd int, helperStart uint64) bool {
	if helperFd >= 0 && !noPidfdWalk.Load() {
		ok, err := pidfdDescends(tid, helper, helperFd)
		if err == nil {
			return ok
		}
		if err == unix.EINVAL || err == unix.ENOTTY || err == unix.ENOSYS {
			noPidfdWalk.Store(true) // this kernel cannot: never again
		} // else (EMFILE, ...): the /proc walk answers this once

	}
	return isDescendant(tid, helper, helperStart, helperFd)
}

// pidfdDescends reports whether thread tid belongs to the process helper
// (whose pidfd is helperFd) or one of its descendants, walking the live
// parent links through pidfds (PIDFD_GET_INFO, Linux 6.13), never /proc.
// Each link is proved against pid reuse: after opening a pidfd for a
// process's parent pid, the process is asked again for its parent; the
// same answer means the parent had not exited when the pidfd was opened
// (an exiting parent's children are reparented before its pid is freed),
// so the pidfd is that parent. Reaching pid helper counts only while
// helperFd's process has not been reaped: until then no other process can
// have its pid. An error (no such kernel support) says nothing about tid;
// a tid that is gone is not the helper's.
func pidfdDescends(tid, helper uint32, helperFd int) (bool, error) {
	fd, err := unix.PidfdOpen(int(tid), pidfdThread)
	if err != nil {
		if err == unix.ESRCH {
			return false, nil
		}
		return false, err
	}
	info := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID}
	if err := unix.IoctlPidfdInfo(fd, &info); err != nil {
		unix.Close(fd)
		if err == unix.ESRCH {
			return false, nil
		}
		return false, err
	}
	p := info.Tgid
	for i := 0; i < maxDepth; i++ {
		if p == helper {
			unix.Close(fd)
			return unix.PidfdSendSignal(helperFd, 0, nil, 0) == nil, nil
		}
		if p <= 1 || info.Ppid == 0 {
			break
		}
		pfd, err := unix.PidfdOpen(int(info.Ppid), 0)
		if err != nil {
			break // the parent exited: tid was reparented meanwhile
		}
		again := unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID}
		if err := unix.IoctlPidfdInfo(fd, &again); err != nil || again.Ppid != info.Ppid {
			unix.Close(pfd)
			break // exited, or reparented while we looked: not a live link
		}
		unix.Close(fd)
		fd, p = pfd, info.Ppid
		info = unix.PidfdInfo{Mask: unix.PIDFD_INFO_PID}
		if err := unix.IoctlPidfdInfo(fd, &info); err != nil {
			break
		}
	}
	unix.Close(fd)
	return false, nil
}
