package integration

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// rss is a process's resident set size in bytes (VmRSS).
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// pjdfstest's cases that the 1 MiB file cap failed, through the mount:
// ftruncate and truncate to 1234567 then stat; pwrite of one byte at
// 2^31+1 then pread — at the default flags, and the daemon stores no
// zeros for them (its RSS grows by less than 1 MiB, st_blocks and statfs
// count what was written).
func TestSparsePjdfstestSizes(t *testing.T) {
	d := start(t, opts{})
	p := d.path("sparse")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	// Warm the paths up, so that what follows measures the content only.
	if _, err := unix.Pwrite(fd, []byte("warm"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Pread(fd, make([]byte, 4), 0); err != nil {
		t.Fatal(err)
	}
	before := rss(t, d.cmd.Process.Pid)
	var fs0 unix.Statfs_t
	if err := unix.Statfs(d.mnt, &fs0); err != nil {
		t.Fatal(err)
	}

	if err := unix.Ftruncate(fd, 1234567); err != nil {
		t.Fatalf("ftruncate 1234567: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil || st.Size != 1234567 {
		t.Fatalf("stat after ftruncate: size %d, %v", st.Size, err)
	}
	if err := unix.Truncate(p, 7654321); err != nil {
		t.Fatalf("truncate 7654321: %v", err)
	}
	if err := unix.Truncate(p, 1234567); err != nil {
		t.Fatalf("truncate 1234567: %v", err)
	}
	if err := unix.Stat(p, &st); err != nil || st.Size != 1234567 {
		t.Fatalf("stat after truncate: size %d, %v", st.Size, err)
	}
	const off = 2147483649
	if n, err := unix.Pwrite(fd, []byte{0xa5}, off); n != 1 || err != nil {
		t.Fatalf("pwrite at 2^31+1: %d %v", n, err)
	}
	buf := make([]byte, 4)
	if n, err := unix.Pread(fd, buf, off-1); n != 2 || err != nil || !bytes.Equal(buf[:2], []byte{0, 0xa5}) {
		t.Fatalf("pread at 2^31: %d %v %x", n, err, buf[:n])
	}
	if err := unix.Fstat(fd, &st); err != nil || st.Size != off+1 || st.Blocks*512 > 64<<10 {
		t.Fatalf("fstat: size %d blocks %d, %v: want size %d and only what was written stored", st.Size, st.Blocks, err, off+1)
	}
	if grew := rss(t, d.cmd.Process.Pid) - before; grew >= 1<<20 {
		t.Fatalf("the daemon's RSS grew by %d bytes for a 2 GiB sparse file", grew)
	} else {
		t.Logf("RSS grew by %d KiB (VmRSS of pid %d)", grew>>10, d.cmd.Process.Pid)
	}
	// The namespace counts what is stored (statfs's used blocks): a page.
	var fs1 unix.Statfs_t
	if err := unix.Statfs(d.mnt, &fs1); err != nil {
		t.Fatal(err)
	}
	if used := int64(fs0.Bfree-fs1.Bfree) * fs1.Bsize; used > 4096 {
		t.Fatalf("statfs: %d more bytes used for a 2 GiB sparse file, want at most a page", used)
	}
	// A hole in the middle reads as zeros. (Not measured: a large read
	// at a fresh offset makes the kernel read ahead with parallel
	// requests, whose buffers are the daemon's, not the file's.)
	hole := bytes.Repeat([]byte{1}, 1<<20)
	if n, err := unix.Pread(fd, hole, 1<<30); n != len(hole) || err != nil || !bytes.Equal(hole, make([]byte, len(hole))) {
		t.Fatalf("pread of a hole: %d %v", n, err)
	}
	// SEEK_DATA and SEEK_HOLE see the holes.
	if o, err := unix.Seek(fd, 4096, unix.SEEK_DATA); err != nil || o != off-off%4096 {
		t.Errorf("SEEK_DATA from 4096: %d %v, want %d", o, err, off-off%4096)
	}
	if o, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err != nil || o != 4096 {
		t.Errorf("SEEK_HOLE from 0: %d %v, want 4096", o, err)
	}
}

// A 64 MiB file on the mount itself, sized by ftruncate and written
// through a shared mapping (what shm_open users do when /dev/shm is the
// mount's own directory), stores what was written only.
func TestSparseMappedFile(t *testing.T) {
	d := start(t, opts{})
	p := d.path("mapped")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 64 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	offs := []int{0, 12345, 32 << 20, size - 1}
	for i, o := range offs {
		m[o] = byte('a' + i)
	}
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if err := unix.Munmap(m); err != nil {
		t.Fatal(err)
	}
	g, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for i, o := range offs {
		b := make([]byte, 1)
		if _, err := g.ReadAt(b, int64(o)); err != nil || b[0] != byte('a'+i) {
			t.Errorf("byte at %d: %q %v", o, b, err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(g.Fd()), &st); err != nil || st.Size != size || st.Blocks*512 > 1<<20 {
		t.Fatalf("fstat: size %d blocks %d %v", st.Size, st.Blocks, err)
	}
	// fallocate stores a range (here 1 MiB in the middle, keeping the
	// size): later writes there cannot fail for lack of room.
	blocks := st.Blocks
	if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 16<<20, 1<<20); err != nil {
		t.Fatalf("fallocate: %v", err)
	}
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Size != size || (st.Blocks-blocks)*512 != 1<<20 {
		t.Fatalf("after fallocate of 1 MiB: size %d, %d more bytes stored (%v)", st.Size, (st.Blocks-blocks)*512, err)
	}
}
