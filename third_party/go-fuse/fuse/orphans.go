// Copyright 2026 the devfsd authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package fuse

import (
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Orphans. A server made by ResumeServer serves a connection whose
// earlier server may have read requests and died (or stopped) without
// answering them. NotifyResend has the kernel queue them again; without
// it (a kernel before 6.9, which lacks CAP_HAS_RESEND) nothing ever
// answers them, and their callers wait in the kernel until the connection
// ends: even a fatal signal does not free them, since the kernel waits
// uninterruptibly for the answer to a request once it was read
// (fs/fuse/dev.c, request_wait_answer).
//
// A signal to such a caller still reaches the server: the kernel sends
// FUSE_INTERRUPT naming the request's unique. The server does not know
// the unique, and go-fuse's answer to that, EAGAIN (the interrupt came
// before its request: try again), would have the kernel send the
// interrupt again at once, for ever. Instead, a resumed server answers
// an orphan's interrupt by ending the orphan itself, with EINTR, as an
// interrupted call ends.
//
// An orphan is recognised by its unique. The kernel gives a request its
// unique when it queues it, and readers take requests in queue order, so
// every request the predecessor read has a unique below every request
// this server reads. A request whose interrupt this server gets was read
// (the kernel interrupts only requests read); if its unique is below the
// least this server has read and it is not among those this server is
// handling, the predecessor read it. The interrupt's handler first waits
// a little (orphanGrace) for the request to show up among this server's,
// for the window between a reader's read and its noting of the unique.

// orphanGrace bounds how long an interrupt of an unknown request waits for
// it to be this server's before it is taken for an orphan.
const orphanGrace = 50 * time.Millisecond

type orphanState struct {
	// orphans is set while requests a predecessor read may be
	// unanswered and will not be resent: from ResumeServer until
	// NotifyResend.
	orphans atomic.Bool
	// minRead is 1 + the least unique this server has read, 0 before
	// the first.
	minRead atomic.Uint64
}

const (
	uniqueIntBit    = uint64(1)       // FUSE_INT_REQ_BIT: an interrupt's unique
	uniqueResendBit = uint64(1) << 63 // FUSE_UNIQUE_RESEND: a resent request's
)

// noteRead notes the unique of a request this server read.
func (ms *protocolServer) noteRead(unique uint64) {
	if !ms.orphans.Load() || unique&(uniqueIntBit|uniqueResendBit) != 0 {
		return
	}
	u := unique + 1
	for {
		cur := ms.minRead.Load()
		if cur != 0 && cur <= u {
			return
		}
		if ms.minRead.CompareAndSwap(cur, u) {
			return
		}
	}
}

// interruptOrphan handles an interrupt of unique, a request not in flight
// here: if it is an orphan, it ends it with EINTR; if it is not, it is
// EAGAIN (the kernel sends the interrupt again).
func (ms *protocolServer) interruptOrphan(unique uint64) Status {
	deadline := time.Now().Add(orphanGrace)
	for time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		if st := ms.interruptInflight(unique); st != EAGAIN {
			return st
		}
	}
	if m := ms.minRead.Load(); m != 0 && unique >= m-1 {
		return EAGAIN // this server's, not yet in flight
	}
	if !orphanEnding {
		return EAGAIN
	}
	var h [sizeOfOutHeader]byte
	*(*OutHeader)(unsafe.Pointer(&h[0])) = OutHeader{
		Length: uint32(sizeOfOutHeader),
		Status: -int32(syscall.EINTR),
		Unique: unique,
	}
	// ENOENT: the request ended meanwhile (its caller died, or the
	// connection was aborted). Nothing else to do either way.
	ms.writev([][]byte{h[:]})
	return OK
}
