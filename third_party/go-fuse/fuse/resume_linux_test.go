// Copyright 2026 the devfsd authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package fuse

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// resumeFS answers GETATTR of the root, and LOOKUP of "slow" with node
// ino after block is closed.
type resumeFS struct {
	RawFileSystem
	ino     uint64
	block   chan struct{}
	entered chan struct{}
}

func (fs *resumeFS) GetAttr(cancel <-chan struct{}, in *GetAttrIn, out *AttrOut) Status {
	out.Ino = in.NodeId
	if in.NodeId != FUSE_ROOT_ID {
		out.Mode = syscall.S_IFREG | 0o644
		out.Nlink = 1
		return OK
	}
	out.Mode = syscall.S_IFDIR | 0o755
	out.Nlink = 2
	return OK
}

func (fs *resumeFS) Lookup(cancel <-chan struct{}, h *InHeader, name string, out *EntryOut) Status {
	if name != "slow" {
		return ENOENT
	}
	if fs.entered != nil {
		close(fs.entered)
	}
	<-fs.block
	out.NodeId = fs.ino
	out.Ino = fs.ino
	out.Mode = syscall.S_IFREG | 0o644
	out.Nlink = 1
	return OK
}

// TestResumeServesWhatTheFirstServerDropped stops a server while it
// handles a LOOKUP, serves its connection from a second server over a
// duplicate of its descriptor, and has the kernel resend the LOOKUP to
// the second one: the caller gets the second server's answer, the first
// server's late reply is dropped, and the connection outlives the first
// server's descriptor.
func TestResumeServesWhatTheFirstServerDropped(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount(2)")
	}
	mnt := t.TempDir()
	opts := &MountOptions{DirectMount: true, DirectMountStrict: true, ExtraCapabilities: CAP_HAS_RESEND}
	fs1 := &resumeFS{RawFileSystem: NewDefaultRawFileSystem(), ino: 10, block: make(chan struct{}), entered: make(chan struct{})}
	srv1, err := NewServer(fs1, mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	served1 := make(chan struct{})
	go func() { srv1.Serve(); close(served1) }()
	if srv1.KernelSettings().Flags64()&CAP_HAS_RESEND == 0 {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		t.Skip("the kernel lacks FUSE_HAS_RESEND")
	}
	var srv2 *Server
	t.Cleanup(func() {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		if srv2 != nil {
			srv2.Wait()
		}
	})

	type result struct {
		ino uint64
		err error
	}
	got := make(chan result, 1)
	go func() {
		var st syscall.Stat_t
		err := syscall.Lstat(filepath.Join(mnt, "slow"), &st)
		got <- result{st.Ino, err}
	}()
	select {
	case <-fs1.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("LOOKUP never reached the first server")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	dropped, err := srv1.StopServing(ctx)
	cancel()
	if err != nil || dropped != 1 {
		t.Fatalf("StopServing = %d, %v; want 1 dropped", dropped, err)
	}
	fd, err := srv1.DupFd()
	if err != nil {
		t.Fatal(err)
	}
	close(fs1.block) // its reply is dropped, not written

	fs2 := &resumeFS{RawFileSystem: NewDefaultRawFileSystem(), ino: 20, block: make(chan struct{})}
	close(fs2.block)
	srv2, err = ResumeServer(fs2, fd, mnt, *srv1.KernelSettings(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if srv2.NegotiatedFlags() != srv1.NegotiatedFlags() {
		t.Fatalf("negotiated %#x, want %#x as the first server", srv2.NegotiatedFlags(), srv1.NegotiatedFlags())
	}
	// Resent before the second server reads: nothing of its own is requeued.
	if st := srv2.NotifyResend(); !st.Ok() {
		t.Fatalf("NotifyResend: %v", st)
	}
	go srv2.Serve()
	if err := srv1.Detach(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-served1:
	case <-time.After(10 * time.Second):
		t.Fatal("the first server's Serve did not return after Detach")
	}
	select {
	case r := <-got:
		if r.err != nil || r.ino != 20 {
			t.Fatalf("lstat after the resend: ino %d, %v; want ino 20 from the second server", r.ino, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the LOOKUP was never answered")
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(mnt, &st); err != nil {
		t.Fatalf("the mount after the first server's descriptor was closed: %v", err)
	}
}

// TestRestartServing stops a server and serves again from it.
func TestRestartServing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount(2)")
	}
	mnt := t.TempDir()
	fs1 := &resumeFS{RawFileSystem: NewDefaultRawFileSystem(), ino: 10, block: make(chan struct{})}
	close(fs1.block)
	srv, err := NewServer(fs1, mnt, &MountOptions{DirectMount: true, DirectMountStrict: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve()
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH); srv.Wait() })
	for i := 0; i < 3; i++ {
		if _, err := srv.StopServing(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := srv.RestartServing(); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(mnt, "slow"), &st); err != nil || st.Ino != 10 {
			t.Fatalf("round %d: lstat: ino %d, %v", i, st.Ino, err)
		}
	}
}
