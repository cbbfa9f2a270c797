// Copyright 2026 the Go-FUSE Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

//go:build mutant_noprefault

package fuse

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// The mutant of readbuf.go: buffers are not mapped before a read, and
// each read finds its buffer's pages given back to the kernel, as memory
// fresh from it or reclaimed would be, so that the kernel's copy of every
// request must fault them in.

func prefaultReadBuf([]byte) {}

// readBufReady drops the pages of buf (MADV_DONTNEED). buf lies in a
// large object of its own, which starts on a page: the page holding
// buf[0] holds nothing else.
func readBufReady(buf []byte) {
	ps := uintptr(pageSize)
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	start := addr &^ (ps - 1)
	end := (addr + uintptr(len(buf))) &^ (ps - 1)
	if end > start {
		unix.Syscall(unix.SYS_MADVISE, start, end-start, unix.MADV_DONTNEED)
	}
}
