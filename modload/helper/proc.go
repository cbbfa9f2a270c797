package helper

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// Who is the helper's descendant
//
// isDescendant walks parent links in /proc: the request's thread id is
// mapped to its process (Tgid in /proc/TID/status, since a FUSE request
// carries the calling thread's id and a Go helper makes its system calls
// from many threads), then each process to its parent (field 4 of
// /proc/PID/stat), at most maxDepth steps, until it meets the helper, init
// (1) or the top of the pid namespace (0).
//
// Cost. One /proc read per generation; lookup calls the predicate on every
// LOOKUP while a helper is attached (never otherwise), and the kernel's
// entry cache keeps lookups rare, so a few microseconds each is accepted.
//
// Pid reuse. A pid names a process only while it lives. The helper's pid
// is taken from SO_PEERCRED when it attaches and forgotten when its session
// ends: at once when its connection closes, and when its pidfd reports the
// exit. A recycled pid would have to reach the same number in between. To
// narrow even that, the helper's start time (field 22 of /proc/PID/stat,
// in clock ticks since boot) is recorded at attach and compared whenever
// the walk reaches the helper's pid: a different process that got the same
// pid started later and does not match. The parent links walked are the
// kernel's live ones, so a descendant whose parent died is reparented (to
// init or a subreaper) and stops counting, which is what we want; what is
// left is the window between reading one link and the next, in which a
// process could exit and its pid be reused by a process that is itself a
// descendant of the helper — which would then be treated as what it is.

// maxDepth bounds the walk.
const maxDepth = 64

func isDescendant(pid, helper uint32, helperStart uint64) bool {
	tgid, ppid, ok := tgidAndParent(pid)
	if !ok {
		return false
	}
	p := tgid
	for i := 0; i < maxDepth; i++ {
		if p == helper {
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
