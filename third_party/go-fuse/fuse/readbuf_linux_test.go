// Copyright 2026 the Go-FUSE Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package fuse

import (
	"runtime/debug"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// unmappedPages counts the pages of buf[from:to] that mincore(2) reports
// not resident: pages the kernel's copy of a request would have to fault
// in (readbuf.go).
func unmappedPages(t *testing.T, buf []byte, from, to int) (unmapped, pages int) {
	t.Helper()
	addr := uintptr(unsafe.Pointer(&buf[from]))
	start := addr &^ uintptr(pageSize-1)
	end := (addr + uintptr(to-from) + uintptr(pageSize-1)) &^ uintptr(pageSize-1)
	vec := make([]byte, (end-start)/uintptr(pageSize))
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, start, end-start, uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatalf("mincore: %v", e)
	}
	for _, v := range vec {
		if v&1 == 0 {
			unmapped++
		}
	}
	return unmapped, len(vec)
}

// A reader's buffer is mapped before the kernel copies a request into
// it: a new buffer whole, even one made of memory the runtime had just
// given back to the kernel, and before each read the pages a request of
// up to a page lands in, even after they were reclaimed. Otherwise a
// server killed during the copy ends that request with EIO for its caller
// (readbuf.go), which a kept connection's successor cannot undo.
func TestReadBuffersAreMappedBeforeTheKernelCopiesIntoThem(t *testing.T) {
	ms := newServer(NewDefaultRawFileSystem(), nil)
	for round := 0; round < 3; round++ {
		debug.FreeOSMemory() // free heap pages go back to the kernel
		buf := ms.readPool.New().([]byte)
		if n, of := unmappedPages(t, buf, 0, len(buf)); n != 0 {
			t.Errorf("round %d: a new read buffer has %d of its %d pages unmapped", round, n, of)
		}
		// Reclaim (swap) of the pages a small request lands in, then the
		// reader's preparation for its next read.
		addr := uintptr(unsafe.Pointer(&buf[0])) &^ uintptr(pageSize-1)
		if _, _, e := unix.Syscall(unix.SYS_MADVISE, addr, uintptr(2*pageSize), unix.MADV_DONTNEED); e != 0 {
			t.Fatalf("madvise: %v", e)
		}
		readBufReady(buf)
		if n, of := unmappedPages(t, buf, 0, pageSize); n != 0 {
			t.Errorf("round %d: before a read, %d of the %d pages a small request lands in are unmapped", round, n, of)
		}
		ms.readPool.Put(buf)
	}
}
