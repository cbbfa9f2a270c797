package daemon

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// reaper collects the exit statuses of the keeper's children. With all
// set (the keeper is a child subreaper, PR_SET_CHILD_SUBREAPER: a
// daemon's successor, started by the daemon, becomes the keeper's child
// when the daemon exits) it reaps every child, orphans included, so none
// is left a zombie; without it (a keeper run inside a test binary, whose
// other children are not its own) only the pids it was asked about.
type reaper struct {
	all  bool
	kick chan struct{}
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus // guarded by mu
	dead    map[int]syscall.WaitStatus      // guarded by mu: reaped, not yet asked for
}

// maxUnclaimed bounds the statuses kept of children nobody asked for
// (orphans of a killed daemon).
const maxUnclaimed = 64

func newReaper(all bool) *reaper {
	r := &reaper{all: all, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		waiters: map[int]chan syscall.WaitStatus{}, dead: map[int]syscall.WaitStatus{}}
	sigchld := make(chan os.Signal, 1)
	signal.Notify(sigchld, syscall.SIGCHLD)
	go func() {
		defer close(r.done)
		defer signal.Stop(sigchld)
		for {
			r.reap()
			select {
			case <-sigchld:
			case <-r.kick:
			case <-r.stop:
				return
			}
		}
	}()
	return r
}

// close stops the reaper.
func (r *reaper) close() {
	close(r.stop)
	<-r.done
}

// wait returns a channel that gets pid's exit status once it is reaped.
func (r *reaper) wait(pid int) <-chan syscall.WaitStatus {
	ch := make(chan syscall.WaitStatus, 1)
	r.mu.Lock()
	if ws, ok := r.dead[pid]; ok {
		delete(r.dead, pid)
		ch <- ws
	} else {
		r.waiters[pid] = ch
	}
	r.mu.Unlock()
	select { // it may have exited before it was asked for
	case r.kick <- struct{}{}:
	default:
	}
	return ch
}

func (r *reaper) reap() {
	if r.all {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, unix.WNOHANG, nil)
			if err == syscall.EINTR {
				continue
			}
			if pid <= 0 || err != nil {
				return
			}
			r.deliver(pid, ws)
		}
	}
	r.mu.Lock()
	pids := make([]int, 0, len(r.waiters))
	for pid := range r.waiters {
		pids = append(pids, pid)
	}
	r.mu.Unlock()
	for _, pid := range pids {
		var ws syscall.WaitStatus
		if got, err := syscall.Wait4(pid, &ws, unix.WNOHANG, nil); err == nil && got == pid {
			r.deliver(pid, ws)
		}
	}
}

func (r *reaper) deliver(pid int, ws syscall.WaitStatus) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.waiters[pid]; ok {
		delete(r.waiters, pid)
		ch <- ws
		return
	}
	if len(r.dead) >= maxUnclaimed {
		for p := range r.dead {
			delete(r.dead, p)
			break
		}
	}
	r.dead[pid] = ws
}
