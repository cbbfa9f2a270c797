// Copyright 2026 the devfsd authors. All rights reserved.
// Use of this source code is governed by a BSD-style
// license that can be found in the LICENSE file.

package fuse

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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
	served2 := make(chan struct{})
	t.Cleanup(func() {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		if srv2 != nil {
			<-served2
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
	go func() { srv2.Serve(); close(served2) }()
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
	// Serve's return, not srv.Wait: a Wait beside Serve's own would race
	// with the readers' WaitGroup reuse on RestartServing.
	served := make(chan struct{})
	go func() { srv.Serve(); close(served) }()
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH); <-served })
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

// TestResumeWithoutResendLetsASignalEndAnOrphan stops a server while it
// handles a LOOKUP made by another process, and serves the connection from
// a second server that does not (cannot) have it resent: the LOOKUP is an
// orphan nobody will answer. A fatal signal to its caller then ends it
// (the second server answers the orphan's interrupt with EINTR), where
// without that the caller could not even die until the connection ended
// (orphans.go).
func TestResumeWithoutResendLetsASignalEndAnOrphan(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for mount(2)")
	}
	statBin, err := exec.LookPath("stat")
	if err != nil {
		t.Skip("no stat(1)")
	}
	mnt := t.TempDir()
	opts := &MountOptions{DirectMount: true, DirectMountStrict: true} // no CAP_HAS_RESEND
	fs1 := &resumeFS{RawFileSystem: NewDefaultRawFileSystem(), ino: 10, block: make(chan struct{}), entered: make(chan struct{})}
	srv1, err := NewServer(fs1, mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	served1 := make(chan struct{})
	go func() { srv1.Serve(); close(served1) }()
	var root syscall.Stat_t
	if err := syscall.Stat(mnt, &root); err != nil {
		t.Fatal(err)
	}
	var srv2 *Server
	served2 := make(chan struct{})
	caller := exec.Command(statBin, filepath.Join(mnt, "slow"))
	exited := make(chan struct{}) // closed once caller was waited for
	var waitErr error
	t.Cleanup(func() {
		if caller.Process != nil {
			select {
			case <-exited:
			default:
				// The caller is stuck for want of an answer: end the
				// connection, which ends its request.
				abortConnection(t, unix.Minor(root.Dev))
				select {
				case <-exited:
				case <-time.After(10 * time.Second):
					t.Errorf("the caller did not end within 10s of the connection's abort")
				}
			}
		}
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		srv1.Detach()
		<-served1
		if srv2 != nil {
			<-served2
		}
	})
	if err := caller.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { waitErr = caller.Wait(); close(exited) }()
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
	close(fs1.block) // its reply is dropped
	fs2 := &resumeFS{RawFileSystem: NewDefaultRawFileSystem(), ino: 20, block: make(chan struct{})}
	close(fs2.block)
	srv2, err = ResumeServer(fs2, fd, mnt, *srv1.KernelSettings(), opts)
	if err != nil {
		t.Fatal(err)
	}
	go func() { srv2.Serve(); close(served2) }()

	// The second server serves: a call made now is answered (of another
	// name: one of "slow" would wait for the orphan's lookup).
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(mnt, "other"), &st); err != syscall.ENOENT {
		t.Fatalf("lstat of a name the second server lacks: %v, want ENOENT", err)
	}
	// The orphan's caller is still waiting.
	select {
	case <-exited:
		t.Fatalf("the orphan's caller ended before any signal: %v", waitErr)
	default:
	}
	caller.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		ws, _ := caller.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
			t.Fatalf("the orphan's caller ended with %v, want death by SIGTERM", waitErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the orphan's caller did not end within 10s of SIGTERM")
	}
}

// abortConnection aborts FUSE connection conn (fusectl, mounted if it is
// not), which ends every request waiting on it.
func abortConnection(t *testing.T, conn uint32) {
	const ctl = "/sys/fs/fuse/connections"
	abort := fmt.Sprintf("%s/%d/abort", ctl, conn)
	if _, err := os.Stat(abort); err != nil {
		if err := syscall.Mount("fusectl", ctl, "fusectl", 0, ""); err != nil && err != syscall.EBUSY {
			t.Errorf("mount fusectl: %v", err)
		}
	}
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
		t.Errorf("abort FUSE connection %d: %v", conn, err)
	}
}
