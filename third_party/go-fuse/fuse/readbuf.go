// Copyright 2026 the Go-FUSE Authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

//go:build !mutant_noprefault

package fuse

// The kernel copies a request into the reader's buffer page by page,
// pinning each page with get_user_pages (fs/fuse/dev.c, fuse_copy_fill).
// A page that is not mapped writable takes the slow path, which fails
// with EINTR once the reading process has a fatal signal pending; the
// kernel then ends that request with EIO (fuse_dev_do_read), and the
// process that made the call gets EIO. A server killed at that moment,
// whose connection lives on in a kept descriptor, would otherwise have
// lost only time: the requests it had read are resent to its successor.
// So a reader's buffer is mapped before the kernel copies into it:
// every page when the buffer is made (a new buffer is often memory fresh
// from the kernel, never touched), and again the pages a request of up
// to a page's length lands in before each read, in case they were
// reclaimed meanwhile (swap).

// prefaultReadBuf writes to every page of buf.
func prefaultReadBuf(buf []byte) {
	for i := 0; i < len(buf); i += pageSize {
		buf[i] = 0
	}
	if len(buf) > 0 {
		buf[len(buf)-1] = 0
	}
}

// readBufReady writes to the pages the first pageSize bytes of buf lie
// on: where every request but a large WRITE or SETXATTR lands.
func readBufReady(buf []byte) {
	if len(buf) == 0 {
		return
	}
	buf[0] = 0
	buf[min(len(buf), pageSize)-1] = 0
}
