// Copyright 2026 the devfsd authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

// This file is devfsd's patch (see ../PATCH.md): serving a FUSE
// connection across processes.
//
// A FUSE connection lives as long as any process holds a descriptor of
// its /dev/fuse file, so a daemon can hand its descriptor to a successor
// (over a Unix socket) or keep it in a keeper (systemd's descriptor
// store), and the successor serves the same mount:
//
//   - StopServing stops this process reading requests, waits a bounded
//     time for the requests it is handling to be answered, and keeps the
//     descriptor open;
//   - ResumeServer serves a descriptor whose INIT was answered by an
//     earlier process, given that INIT request;
//   - NotifyResend, sent by the successor once it serves, has the kernel
//     queue again every request that was read and not answered (those of
//     a stopped or killed process).
//
// A request the kernel resends carries FUSE_UNIQUE_RESEND (bit 63) in its
// unique. The reply echoes the unique whole, and INTERRUPT names a request
// by its unique whole, so nothing here masks it; a reply to the request's
// first copy (from the old process, after the resend) finds no request and
// is refused by the kernel with ENOENT, which is harmless.
package fuse

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// serveState is the Server's part of StopServing and RestartServing.
type serveState struct {
	stopMu  sync.Mutex    // serialises StopServing, RestartServing, Detach
	stopped atomic.Bool   // set by StopServing, cleared by RestartServing
	idle    chan struct{} // closed by Serve once no reader is left after a stop
	restart chan bool     // Serve's wait after a stop: true: serve again; false: end

	// repliesDropped is set when StopServing gave up waiting: a reply
	// written after it is dropped, its request left to the kernel.
	repliesDropped atomic.Bool
}

// errStopped is readRequest's status once StopServing has stopped the
// readers.
const errStopped = Status(syscall.ESHUTDOWN)

// errStop is readFD's error once StopServing has stopped the readers.
var errStop = errors.New("fuse: stopped serving")

// stopPipe is a pipe that is readable while the readers are stopped.
type stopPipe struct{ r, w int }

func newStopPipe() (stopPipe, error) {
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		return stopPipe{}, err
	}
	for _, fd := range p {
		syscall.CloseOnExec(fd)
		if err := syscall.SetNonblock(fd, true); err != nil {
			syscall.Close(p[0])
			syscall.Close(p[1])
			return stopPipe{}, err
		}
	}
	return stopPipe{r: p[0], w: p[1]}, nil
}

// raise makes the pipe readable, lower empties it again.
func (p stopPipe) raise() { syscall.Write(p.w, []byte{0}) }
func (p stopPipe) lower() {
	var b [16]byte
	for {
		if n, _ := syscall.Read(p.r, b[:]); n <= 0 {
			return
		}
	}
}
func (p stopPipe) close() {
	syscall.Close(p.r)
	syscall.Close(p.w)
}

// readFD reads one request into dest. The descriptor is non-blocking
// (newFuseFD): a read that finds nothing waits (waitReadable) for a
// request or for StopServing, which makes the stop pipe readable.
func (r *fuseFD) readFD(dest []byte) (int, error) {
	for {
		if r.server.stopped.Load() {
			return 0, errStop // not even a request already queued
		}
		var n int
		var err error
		stopped := false
		if cerr := r.withFD(func(fd int) {
			if n, err = syscall.Read(fd, dest); err != syscall.EAGAIN {
				return
			}
			r.waiting.Add(1)
			tid := r.waiters.tracing()
			var werr error
			if stopped, werr = r.waitReadable(fd); werr != nil { // readwait_linux.go
				err = werr
			}
			r.waiters.untrace(tid)
			r.waiting.Add(-1)
		}); cerr != nil {
			return 0, cerr
		}
		switch {
		case stopped:
			return 0, errStop
		case err == syscall.EAGAIN:
			continue // readable now, or another reader took it: read again
		}
		return n, err
	}
}

// readStatus maps a read error to the status readRequest returns.
func readStatus(err error) Status {
	if err == errStop {
		return errStopped
	}
	return ToStatus(err)
}

// ResumeServer returns a server for fd, a /dev/fuse descriptor of a live
// connection whose INIT request, init, was answered by an earlier server
// (in this process or another; see KernelSettings). Nothing is written to
// fd: the capabilities negotiated are computed from init and opts exactly
// as NewServer's INIT reply would compute them, so opts must be the
// options of the server that answered INIT. The server takes fd; call
// Serve to serve it (and NotifyResend, once serving, to have requests
// that an earlier server read and did not answer sent again). mountPoint
// is where the connection is mounted, for Unmount; it is not mounted
// again.
func ResumeServer(fs RawFileSystem, fd int, mountPoint string, init InitIn, opts *MountOptions) (*Server, error) {
	if init.Major != _FUSE_KERNEL_VERSION || init.Minor < _MINIMUM_MINOR_VERSION {
		return nil, fmt.Errorf("fuse: resume: INIT of protocol %d.%d, want %d.%d or later",
			init.Major, init.Minor, _FUSE_KERNEL_VERSION, _MINIMUM_MINOR_VERSION)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fuse: resume: descriptor %d: %w", fd, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFCHR {
		return nil, fmt.Errorf("fuse: resume: descriptor %d is not a character device (/dev/fuse)", fd)
	}
	ms := newServer(fs, opts)
	ms.ready <- nil // WaitMount: the mount is live already
	ms.mountPoint = mountPoint

	// The INIT reply NewServer would have written, computed by its own
	// handler over a copy of the request.
	init.InHeader = InHeader{Length: uint32(unsafe.Sizeof(init)), Opcode: _OP_INIT}
	in := make([]byte, unsafe.Sizeof(init))
	*(*InitIn)(unsafe.Pointer(&in[0])) = init
	req := &request{
		inputBuf:     in,
		outHeaderBuf: make([]byte, sizeOfOutHeader),
		outDataBuf:   make([]byte, unsafe.Sizeof(InitOut{})),
	}
	doInit(&ms.protocolServer, req)
	if !req.status.Ok() {
		return nil, fmt.Errorf("fuse: resume: INIT: %v", req.status)
	}

	var err error
	if ms.fuseFD, err = ms.newFuseFD(fd); err != nil {
		return nil, fmt.Errorf("fuse: resume: %w", err)
	}
	ms.protocolServer.writev = ms.fuseFD.writev
	if ms.kernelSettings.Minor >= 13 {
		ms.setSplice()
	}
	ms.fileSystem.Init(ms)
	ms.orphans.Store(true) // until NotifyResend (orphans.go)
	ms.fuseFD.loops.Add(1) // for Serve, as NewServer does
	return ms, nil
}

// NotifyResend asks the kernel to queue again every request that was read
// from the connection and not answered, marked FUSE_UNIQUE_RESEND. It is
// ENOSYS unless CAP_HAS_RESEND was negotiated (ask for it with
// MountOptions.ExtraCapabilities at the first mount). Call it while this
// server reads nothing (before Serve, or stopped): a request it is
// handling would be queued again too, and carried out twice.
func (ms *Server) NotifyResend() Status {
	if ms.negotiatedFlags&CAP_HAS_RESEND == 0 {
		return ENOSYS
	}
	var h [sizeOfOutHeader]byte
	*(*OutHeader)(unsafe.Pointer(&h[0])) = OutHeader{
		Length: uint32(sizeOfOutHeader),
		Status: int32(-NOTIFY_RESEND), // a notify code, as serializeHeader writes it
	}
	_, errno := ms.fuseFD.writev([][]byte{h[:]})
	if errno == 0 {
		ms.orphans.Store(false) // they come again, to this server
	}
	return Status(errno)
}

// NegotiatedFlags returns the capabilities of the INIT reply (both the
// kernel's and the server's).
func (ms *Server) NegotiatedFlags() uint64 { return ms.negotiatedFlags }

// DupFd returns a new descriptor (close-on-exec) of the server's
// /dev/fuse file, to hand to a successor or a keeper. The caller owns it.
// Its file is non-blocking, as the server's is.
func (ms *Server) DupFd() (int, error) {
	nfd := -1
	var err error
	if cerr := ms.fuseFD.withFD(func(fd int) {
		var r uintptr
		var e syscall.Errno
		r, _, e = syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			err = e
			return
		}
		nfd = int(r)
	}); cerr != nil {
		return -1, cerr
	}
	return nfd, err
}

// StopServing stops the server reading requests, keeping its descriptor
// (and so the connection) open, and waits until the requests it is
// handling are answered or ctx ends. Serve must be running. It returns
// the number of requests still being handled when ctx ended: their replies
// will not be written (the kernel keeps them, and a successor's
// NotifyResend has them sent again), and so neither will any reply of
// this server after that. Serve does not return; RestartServing or Detach
// end the stop, and StopServing may be called again only once Serve reads
// again.
func (ms *Server) StopServing(ctx context.Context) (dropped int, err error) {
	ms.stopMu.Lock()
	if ms.stopped.Load() {
		ms.stopMu.Unlock()
		return 0, errors.New("fuse: already stopped")
	}
	idle := make(chan struct{})
	ms.idle = idle
	ms.restart = make(chan bool, 1)
	ms.stopped.Store(true)
	// Every wait for a request ends, and every read from now on finds
	// the pipe readable.
	ms.fuseFD.stop.raise()
	ms.stopMu.Unlock()
	select {
	case <-idle:
		return 0, nil
	case <-ctx.Done():
	}
	ms.repliesDropped.Store(true)
	ms.interruptMu.Lock()
	dropped = len(ms.reqInflight)
	ms.interruptMu.Unlock()
	return dropped, nil
}

// RestartServing ends a stop: the server reads requests again (Serve
// goes on), and replies are written again. If StopServing dropped
// replies, the caller should NotifyResend, so that those requests are
// answered.
func (ms *Server) RestartServing() error {
	ms.stopMu.Lock()
	defer ms.stopMu.Unlock()
	if !ms.stopped.Load() {
		return errors.New("fuse: not stopped")
	}
	if ms.restart == nil || len(ms.restart) > 0 {
		return errors.New("fuse: detached")
	}
	// Lowered and cleared before Serve reads again.
	ms.fuseFD.stop.lower()
	ms.repliesDropped.Store(false)
	ms.stopped.Store(false)
	ms.restart <- true
	return nil
}

// Detach ends a stopped server: Serve closes this server's descriptor and
// returns. The connection lives on in the other descriptors of its file
// (a successor's, a keeper's).
func (ms *Server) Detach() error {
	ms.stopMu.Lock()
	defer ms.stopMu.Unlock()
	if !ms.stopped.Load() {
		return errors.New("fuse: not stopped")
	}
	select {
	case ms.restart <- false:
		return nil
	default:
		return errors.New("fuse: already detached")
	}
}

// waitRestart is called by Serve when its readers have all returned. It
// reports whether to serve again: false unless StopServing stopped them
// and RestartServing ended the stop.
func (ms *Server) waitRestart() bool {
	ms.stopMu.Lock()
	idle, restart := ms.idle, ms.restart
	ms.stopMu.Unlock()
	if restart == nil {
		return false // not stopped: the connection ended
	}
	close(idle)
	ms.interruptMu.Lock()
	dead := ms.connectionDead // the readers saw ENODEV: unmounted
	ms.interruptMu.Unlock()
	if dead {
		return false
	}
	again := <-restart
	ms.stopMu.Lock()
	ms.idle, ms.restart = nil, nil
	ms.stopMu.Unlock()
	if again {
		ms.fuseFD.loops.Add(1)
	}
	return again
}
