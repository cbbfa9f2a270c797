package fs

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/lookup"
	"github.com/devfsd/devfsd/test/harness"
)

// TestResumeHandsTheMountToASuccessor stops a mounted server while it
// waits on the loader for a LOOKUP, hands the connection, the specials and
// the namespace (exported and imported, through JSON) to a second server
// as a successor process would receive them, and checks what callers see:
// the held LOOKUP answered by the successor after the resend, the same
// inode numbers, a file opened (and unlinked) before the switch still
// read and written through its descriptor and released, new nodes above
// the old numbers, the specials still mounted, and the successor's
// Shutdown taking everything down while the predecessor's leaves it.
func TestResumeHandsTheMountToASuccessor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (mount(2) of FUSE, devpts, tmpfs)")
	}
	mnt := t.TempDir()
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	nq1 := NewNotifyQueue(0)
	ns1 := dcache.New(dcache.Options{Sink: nq1, NegativeTTL: -1})
	res1 := lookup.New(ns1, lookup.LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		if name == "slow" {
			entered <- struct{}{}
			select { // the first server never gets to answer
			case <-release:
			case <-ctx.Done():
			}
		}
		return nil
	}), lookup.Options{Timeout: 30 * time.Second})
	opts := Options{Dev: true, EntryTimeout: time.Minute, AttrTimeout: time.Minute}
	s1 := New(res1, nq1, opts)
	t.Cleanup(func() { s1.Shutdown() })
	if _, err := ns1.Register("null", dcache.Spec{Type: dcache.TypeChar, Mode: 0o666, Major: 1, Minor: 3}, dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	if err := PrepareSpecials(ns1, SpecialOpts{Pts: SpecialOn, Shm: SpecialOn}); err != nil {
		t.Fatal(err)
	}
	if err := s1.Mount(mnt); err != nil {
		t.Fatal(err)
	}
	if _, err := s1.MountSpecials(SpecialOpts{Pts: SpecialOn, Shm: SpecialOn}); err != nil {
		t.Fatal(err)
	}
	if s1.srv.KernelSettings().Flags64()&(1<<39) == 0 { // fuse.CAP_HAS_RESEND
		t.Skip("the kernel lacks FUSE_HAS_RESEND (Linux < 6.9)")
	}
	var null1 unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "null"), &null1); err != nil {
		t.Fatal(err)
	}
	// Raw system calls, not os.File: the runtime would add a file of this
	// process's own mount to its poller, and that waits for the server's
	// answer to FUSE_POLL with the runtime's P held (a deadlock at
	// GOMAXPROCS 1).
	fd, err := unix.Open(filepath.Join(mnt, "file"), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			unix.Close(fd)
		}
	}()
	if _, err := unix.Pwrite(fd, []byte("before"), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(mnt, "file")); err != nil {
		t.Fatal(err)
	}

	slow := make(chan error, 1)
	go func() {
		var st unix.Stat_t
		err := unix.Lstat(filepath.Join(mnt, "slow"), &st)
		if err == nil && st.Rdev != unix.Mkdev(1, 5) {
			err = syscall.EBADE
		}
		slow <- err
	}()
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the LOOKUP of slow never reached the loader")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	dropped, err := s1.Stop(ctx)
	cancel()
	if err != nil || dropped != 1 {
		t.Fatalf("Stop = %d, %v; want the held LOOKUP dropped", dropped, err)
	}
	st, files, err := s1.Handover()
	if err != nil {
		t.Fatal(err)
	}
	ex := ns1.Export(s1.Unlinked())
	var st2 MountState
	var ex2 dcache.Export
	for _, c := range []struct{ in, out any }{{st, &st2}, {ex, &ex2}} {
		b, err := json.Marshal(c.in)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, c.out); err != nil {
			t.Fatal(err)
		}
	}

	nq2 := NewNotifyQueue(0)
	ns2, err := dcache.Import(dcache.Options{Sink: nq2, NegativeTTL: -1}, &ex2)
	if err != nil {
		t.Fatal(err)
	}
	res2 := lookup.New(ns2, lookup.LoaderFunc(func(ctx context.Context, dir, name string, c dcache.Caller) error {
		if name == "slow" {
			_, err := ns2.Register("slow", dcache.Spec{Type: dcache.TypeChar, Mode: 0o666, Major: 1, Minor: 5}, dcache.Caller{Origin: dcache.OriginLoader})
			return err
		}
		return nil
	}), lookup.Options{Timeout: 5 * time.Second})
	s2 := New(res2, nq2, opts)
	t.Cleanup(func() { s2.Shutdown() })
	if err := s2.Resume(st2, files); err != nil {
		t.Fatal(err)
	}
	if err := s1.HandedOver(); err != nil {
		t.Fatal(err)
	}
	close(release) // the first server's answer is dropped
	select {
	case err := <-slow:
		if err != nil {
			t.Fatalf("the held lstat: %v; want the successor's node", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the held lstat was never answered")
	}
	// The predecessor's Shutdown leaves the mount alone.
	if err := s1.Shutdown(); err != nil {
		t.Fatal(err)
	}

	var null2 unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "null"), &null2); err != nil || null2.Ino != null1.Ino {
		t.Fatalf("null after the switch: ino %d, %v; want %d", null2.Ino, err, null1.Ino)
	}
	buf := make([]byte, 16)
	if n, err := unix.Pread(fd, buf, 0); n < 0 || string(buf[:n]) != "before" {
		t.Fatalf("the unlinked open file after the switch: %q, %v", buf[:max(n, 0)], err)
	}
	if _, err := unix.Pwrite(fd, []byte("after!"), 0); err != nil {
		t.Fatal(err)
	}
	if n, _ := unix.Pread(fd, buf, 0); n < 0 || string(buf[:n]) != "after!" {
		t.Fatalf("read back %q", buf[:max(n, 0)])
	}
	closed = true
	if err := unix.Close(fd); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(filepath.Join(mnt, "new"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 7))); err != nil {
		t.Fatal(err)
	}
	var nst unix.Stat_t
	if err := unix.Lstat(filepath.Join(mnt, "new"), &nst); err != nil || nst.Ino <= ex.LastIno {
		t.Fatalf("new node: ino %d, %v; want above %d", nst.Ino, err, ex.LastIno)
	}
	if err := unix.Lstat(filepath.Join(mnt, "missing"), &nst); err != unix.ENOENT {
		t.Fatalf("missing name: %v", err)
	}
	if ms := mountsBelow(t, mnt); ms["pts"] == nil || ms["shm"] == nil {
		t.Fatalf("specials after the switch: %v", ms)
	}
	// The RELEASE of the file opened before the switch reached the
	// successor, which closed the open the export counted.
	if !harness.Poll(10*time.Second, time.Millisecond, func() bool { return ns2.Statfs().Bytes == 0 }) {
		t.Fatalf("after the close: %d bytes stored, want the unlinked file's content freed", ns2.Statfs().Bytes)
	}
	if err := s2.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if ms := mountsBelow(t, filepath.Dir(mnt)); len(ms) != 0 {
		t.Fatalf("left mounted: %v", ms)
	}
}
