// Copyright 2026 the devfsd authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

// This file is devfsd's patch (see ../PATCH.md): one reader woken per
// request.

package fuse

import (
	"runtime"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Readers that find no request wait for one beside the stop pipe
// (readFD, resume.go). poll(2) wakes every waiting reader for each
// request — the kernel's wake of the connection's queue wakes all of
// its non-exclusive waiters — and all but one find it taken and sleep
// again inside the kernel: with n readers waiting, n-1 threads switched
// in and out for nothing per request, on the path of every request on
// a small machine. So each
// waiting reader waits in an epoll instance of its own, taken from a
// free list, that watches the descriptor with EPOLLEXCLUSIVE: the
// kernel then wakes the first instance that has a waiter, and stops
// (ep_poll_callback; instances nobody waits in are passed over, so no
// wake-up is lost). The stop pipe is watched without it: a stop wakes
// every reader. Without EPOLLEXCLUSIVE (kernels before 4.5) readers
// poll(2).

// waiters is a fuseFD's free list of epoll instances.
type waiters struct {
	mu     sync.Mutex
	free   []int
	all    []int
	nopoll bool // epoll with EPOLLEXCLUSIVE failed: poll(2)
	// polling makes readers poll(2) from their next wait on (tests).
	polling atomic.Bool
	// trace, when set, records the threads waiting now (tests).
	trace atomic.Bool
	tids  map[int]int // guarded by mu
}

// tracing records the calling thread as waiting, if tracing; its tid or 0.
func (w *waiters) tracing() int {
	if !w.trace.Load() {
		return 0
	}
	runtime.LockOSThread() // the thread that will wait, until untrace
	tid := unix.Gettid()
	w.mu.Lock()
	if w.tids == nil {
		w.tids = map[int]int{}
	}
	w.tids[tid]++
	w.mu.Unlock()
	return tid
}

func (w *waiters) untrace(tid int) {
	if tid == 0 {
		return
	}
	w.mu.Lock()
	if w.tids[tid]--; w.tids[tid] <= 0 {
		delete(w.tids, tid)
	}
	w.mu.Unlock()
	runtime.UnlockOSThread()
}

// waitingThreads returns the threads waiting now (tracing).
func (w *waiters) waitingThreads() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	tids := make([]int, 0, len(w.tids))
	for tid := range w.tids {
		tids = append(tids, tid)
	}
	return tids
}

// waitReadable waits until fd may have a request or the stop pipe is
// readable; stopped reports the latter. EINTR is no error (the caller
// reads again).
func (r *fuseFD) waitReadable(fd int) (stopped bool, err error) {
	ep, ok := r.waiters.get(fd, r.stop.r)
	if !ok {
		return r.pollReadable(fd)
	}
	defer r.waiters.put(ep)
	var evs [2]unix.EpollEvent
	n, err := unix.EpollWait(ep, evs[:], -1)
	if err == unix.EINTR {
		return false, nil
	}
	for _, ev := range evs[:max(n, 0)] {
		if ev.Fd == int32(r.stop.r) {
			stopped = true
		}
	}
	return stopped, err
}

func (r *fuseFD) pollReadable(fd int) (stopped bool, err error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(r.stop.r), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
		return false, err
	}
	return fds[1].Revents != 0, nil
}

// get returns a free epoll instance watching fd (exclusively) and stop,
// making one if none is free; false: use poll(2).
func (w *waiters) get(fd, stop int) (int, bool) {
	w.mu.Lock()
	if w.nopoll || pollEveryReader || w.polling.Load() {
		w.mu.Unlock()
		return 0, false
	}
	if n := len(w.free); n > 0 {
		ep := w.free[n-1]
		w.free = w.free[:n-1]
		w.mu.Unlock()
		return ep, true
	}
	w.mu.Unlock()
	ep, err := newWaiter(fd, stop)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.nopoll = true
		return 0, false
	}
	w.all = append(w.all, ep)
	return ep, true
}

func newWaiter(fd, stop int) (int, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return -1, err
	}
	err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: int32(fd)})
	if err == nil {
		err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, stop, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(stop)})
	}
	if err != nil {
		unix.Close(ep)
		return -1, err
	}
	return ep, nil
}

func (w *waiters) put(ep int) {
	w.mu.Lock()
	w.free = append(w.free, ep)
	w.mu.Unlock()
}

// close closes every instance; no reader may wait any more.
func (w *waiters) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ep := range w.all {
		unix.Close(ep)
	}
	w.all, w.free = nil, nil
}
