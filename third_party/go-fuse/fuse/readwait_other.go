// Copyright 2026 the devfsd authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

//go:build !linux

package fuse

import "golang.org/x/sys/unix"

// waiters: epoll is Linux's; elsewhere readers poll(2)
// (readwait_linux.go).
type waiters struct{}

func (w *waiters) close()          {}
func (w *waiters) tracing() int    { return 0 }
func (w *waiters) untrace(tid int) {}

func (r *fuseFD) waitReadable(fd int) (stopped bool, err error) {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(r.stop.r), Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
		return false, err
	}
	return fds[1].Revents != 0, nil
}
