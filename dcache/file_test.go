package dcache

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

func newFile(t *testing.T, opts Options) (*Namespace, *Node) {
	t.Helper()
	ns := New(opts)
	f, err := ns.Root().Mknod("f", syscall.S_IFREG|0644, 0, 0, fuseCaller)
	if err != nil {
		t.Fatal(err)
	}
	return ns, f
}

// Truncating up and writing far past the end store nothing but what was
// written; the holes read as zeros (pjdfstest's ftruncate 1234567 and
// pwrite at 2^31+1, at the default limits).
func TestSparseStoresOnlyWhatIsWritten(t *testing.T) {
	ns, f := newFile(t, Options{})
	if _, err := f.SetAttr(SetAttrIn{Valid: SetSize, Size: 1234567}, fuseCaller); err != nil {
		t.Fatalf("truncate 1234567: %v", err)
	}
	if a := f.Attr(); a.Size != 1234567 || a.Stored != 0 {
		t.Fatalf("after truncate: size %d stored %d, want 1234567, 0", a.Size, a.Stored)
	}
	if st := ns.Statfs(); st.Bytes != 0 {
		t.Fatalf("statfs bytes %d after a truncate up, want 0", st.Bytes)
	}
	const off = 1<<31 + 1
	if n, err := f.WriteAt([]byte{'x'}, off); n != 1 || err != nil {
		t.Fatalf("pwrite at 2^31+1: %d %v", n, err)
	}
	a := f.Attr()
	if a.Size != off+1 || a.Stored == 0 || a.Stored > PageSize {
		t.Fatalf("after pwrite: size %d stored %d", a.Size, a.Stored)
	}
	if st := ns.Statfs(); st.Bytes != a.Stored {
		t.Fatalf("statfs bytes %d, stored %d", st.Bytes, a.Stored)
	}
	buf := make([]byte, 3)
	if n, _ := f.ReadAt(buf, off-1); n != 2 || !bytes.Equal(buf[:2], []byte{0, 'x'}) {
		t.Fatalf("pread around 2^31+1: %d %q", n, buf[:n])
	}
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = 0xff
	}
	if n, _ := f.ReadAt(big, 1<<30); n != len(big) || !bytes.Equal(big, make([]byte, len(big))) {
		t.Fatalf("a hole did not read as zeros (%d bytes)", n)
	}
}

// The limits: MaxFileSize is EFBIG (short write at it), MaxBytes counts
// stored bytes only and is ENOSPC (short write at it).
func TestSparseLimits(t *testing.T) {
	ns, f := newFile(t, Options{MaxFileSize: 1 << 40, MaxBytes: 3 * PageSize})
	if _, err := f.SetAttr(SetAttrIn{Valid: SetSize, Size: 1 << 40}, fuseCaller); err != nil {
		t.Fatalf("truncate to 1 TiB with 12 KiB of room: %v", err)
	}
	_, err := f.SetAttr(SetAttrIn{Valid: SetSize, Size: 1<<40 + 1}, fuseCaller)
	wantErrno(t, "truncate past MaxFileSize", err, syscall.EFBIG)
	_, err = f.WriteAt([]byte("x"), 1<<40)
	wantErrno(t, "write at MaxFileSize", err, syscall.EFBIG)
	if n, err := f.WriteAt([]byte("ab"), 1<<40-1); n != 1 || err != nil {
		t.Fatalf("write across MaxFileSize: %d %v, want a short write of 1", n, err)
	}
	if _, err := f.SetAttr(SetAttrIn{Valid: SetSize, Size: 0}, fuseCaller); err != nil {
		t.Fatal(err)
	}
	if st := ns.Statfs(); st.Bytes != 0 {
		t.Fatalf("bytes after truncate 0: %d", st.Bytes)
	}
	// 4 pages into room for 3: a short write of 3 pages, then ENOSPC.
	data := bytes.Repeat([]byte{7}, 4*PageSize)
	if n, err := f.WriteAt(data, 10*PageSize); n != 3*PageSize || err != nil {
		t.Fatalf("write past MaxBytes: %d %v, want a short write of %d", n, err, 3*PageSize)
	}
	if a := f.Attr(); a.Size != 13*PageSize || a.Stored != 3*PageSize {
		t.Fatalf("after the short write: size %d stored %d", a.Size, a.Stored)
	}
	_, err = f.WriteAt([]byte("y"), 20*PageSize)
	wantErrno(t, "write with MaxBytes used", err, syscall.ENOSPC)
	// Rewriting stored bytes needs no room.
	if n, err := f.WriteAt([]byte("zz"), 11*PageSize); n != 2 || err != nil {
		t.Fatalf("rewrite in place: %d %v", n, err)
	}
	// Shrinking frees whole pages and zeroes the cut one.
	if _, err := f.SetAttr(SetAttrIn{Valid: SetSize, Size: 11*PageSize + 1}, fuseCaller); err != nil {
		t.Fatal(err)
	}
	if st := ns.Statfs(); st.Bytes != 2*PageSize {
		t.Fatalf("bytes after shrink: %d, want %d", st.Bytes, 2*PageSize)
	}
	if _, err := f.SetAttr(SetAttrIn{Valid: SetSize, Size: 12 * PageSize}, fuseCaller); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	if n, _ := f.ReadAt(buf, 11*PageSize); n != 3 || !bytes.Equal(buf, []byte{'z', 0, 0}) {
		t.Fatalf("after shrink and regrow: %q, want z then zeros", buf[:n])
	}
}

// A small file stores its bytes, not a page.
func TestSparseSmallFileStoresItsBytes(t *testing.T) {
	ns, f := newFile(t, Options{})
	f.WriteAt([]byte("0123456789"), 0)
	if a := f.Attr(); a.Stored != 10 || ns.Statfs().Bytes != 10 {
		t.Fatalf("10-byte file: stored %d, statfs %d", a.Stored, ns.Statfs().Bytes)
	}
	// Appending in small pieces grows the page by doubling, never past a page.
	for i := 0; i < 1000; i++ {
		f.WriteAt([]byte("abcdefgh"), int64(10+8*i))
	}
	if a := f.Attr(); a.Size != 8010 || a.Stored < 8010 || a.Stored > 2*PageSize {
		t.Fatalf("after appends: size %d stored %d", a.Size, a.Stored)
	}
}

// Content counts while the file is linked or open: an unlinked open file
// keeps its charge (and may grow, charged) until its last Close.
func TestSparseUnlinkedOpenFileStaysCharged(t *testing.T) {
	ns, f := newFile(t, Options{MaxBytes: 4 * PageSize})
	f.Open()
	f.WriteAt(make([]byte, 2*PageSize), 0)
	if err := ns.Root().Unlink("f", fuseCaller); err != nil {
		t.Fatal(err)
	}
	if st := ns.Statfs(); st.Bytes != 2*PageSize {
		t.Fatalf("unlinked open file: statfs bytes %d, want %d", st.Bytes, 2*PageSize)
	}
	if n, err := f.WriteAt(make([]byte, 3*PageSize), 2*PageSize); n != 2*PageSize || err != nil {
		t.Fatalf("growing an unlinked open file past MaxBytes: %d %v, want a short write", n, err)
	}
	buf := make([]byte, 4)
	if n, _ := f.ReadAt(buf, 0); n != 4 {
		t.Fatalf("read of the unlinked open file: %d", n)
	}
	f.Close()
	if st := ns.Statfs(); st.Bytes != 0 {
		t.Fatalf("after the last close: statfs bytes %d, want 0", st.Bytes)
	}
	defer func() {
		if recover() == nil {
			t.Error("Close of a closed file did not panic")
		}
	}()
	f.Close()
}

func TestSparseSeekDataHole(t *testing.T) {
	_, f := newFile(t, Options{})
	f.SetAttr(SetAttrIn{Valid: SetSize, Size: 10 * PageSize}, fuseCaller)
	f.WriteAt([]byte("d"), 3*PageSize+5)
	f.WriteAt([]byte("d"), 4*PageSize)
	f.WriteAt([]byte("d"), 8*PageSize+100)
	for _, c := range []struct {
		off   int64
		hole  bool
		want  int64
		errno syscall.Errno
	}{
		{0, false, 3 * PageSize, 0},
		{0, true, 0, 0},
		{3*PageSize + 7, false, 3*PageSize + 7, 0},
		{3 * PageSize, true, 5 * PageSize, 0},
		{5 * PageSize, false, 8 * PageSize, 0},
		{8*PageSize + 1, true, 9 * PageSize, 0},
		{9 * PageSize, false, 0, syscall.ENXIO},
		{9 * PageSize, true, 9 * PageSize, 0},
		{10 * PageSize, true, 0, syscall.ENXIO},
		{10 * PageSize, false, 0, syscall.ENXIO},
	} {
		got, err := f.SeekData(c.off, c.hole)
		wantErrno(t, "seek", err, c.errno)
		if c.errno == 0 && got != c.want {
			t.Errorf("seek(%d, hole=%v) = %d, want %d", c.off, c.hole, got, c.want)
		}
	}
}

// Random writes, truncates and reads agree with a dense reference, and
// the stored bytes always equal what Statfs counts.
func TestSparseMatchesDenseModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ns, f := newFile(t, Options{})
	var ref []byte
	const span = 40 * PageSize
	for i := 0; i < 3000; i++ {
		switch r.IntN(4) {
		case 0, 1:
			off := r.IntN(span)
			p := make([]byte, r.IntN(3*PageSize))
			for j := range p {
				p[j] = byte(r.Uint32())
			}
			if n, err := f.WriteAt(p, int64(off)); n != len(p) || (err != nil && len(p) > 0) {
				t.Fatalf("op %d: write %d at %d: %d %v", i, len(p), off, n, err)
			}
			if end := off + len(p); end > len(ref) && len(p) > 0 {
				ref = append(ref, make([]byte, end-len(ref))...)
			}
			copy(ref[off:], p)
		case 2:
			size := r.IntN(span)
			if _, err := f.SetAttr(SetAttrIn{Valid: SetSize, Size: uint64(size)}, fuseCaller); err != nil {
				t.Fatal(err)
			}
			if size < len(ref) {
				ref = ref[:size]
			} else {
				ref = append(ref, make([]byte, size-len(ref))...)
			}
		case 3:
			off := r.IntN(span)
			p := make([]byte, r.IntN(3*PageSize))
			n, _ := f.ReadAt(p, int64(off))
			want := []byte{}
			if off < len(ref) {
				want = ref[off:min(len(ref), off+len(p))]
			}
			if !bytes.Equal(p[:n], want) {
				t.Fatalf("op %d: read %d at %d differs from the model", i, len(p), off)
			}
		}
		a := f.Attr()
		if a.Size != uint64(len(ref)) {
			t.Fatalf("op %d: size %d, model %d", i, a.Size, len(ref))
		}
		if st := ns.Statfs(); st.Bytes != a.Stored {
			t.Fatalf("op %d: statfs bytes %d, stored %d", i, st.Bytes, a.Stored)
		}
	}
}

// Allocate stores the range (so writes there need no more room), grows
// the size unless keepSize, and is ENOSPC past MaxBytes, EFBIG past
// MaxFileSize.
func TestSparseAllocate(t *testing.T) {
	ns, f := newFile(t, Options{MaxFileSize: 1 << 30, MaxBytes: 4 * PageSize})
	if err := f.Allocate(PageSize/2, 2*PageSize, false); err != nil {
		t.Fatal(err)
	}
	if a := f.Attr(); a.Size != PageSize/2+2*PageSize || a.Stored != 2*PageSize+PageSize/2 {
		t.Fatalf("after fallocate: size %d stored %d", a.Size, a.Stored)
	}
	if err := f.Allocate(8*PageSize, PageSize, true); err != nil {
		t.Fatal(err)
	}
	if a := f.Attr(); a.Size != PageSize/2+2*PageSize || ns.Statfs().Bytes != a.Stored {
		t.Fatalf("after fallocate KEEP_SIZE: size %d stored %d statfs %d", a.Size, a.Stored, ns.Statfs().Bytes)
	}
	before := ns.Statfs().Bytes
	if n, err := f.WriteAt(make([]byte, 2*PageSize), PageSize/2); n != 2*PageSize || err != nil {
		t.Fatalf("write into the allocated range: %d %v", n, err)
	}
	if got := ns.Statfs().Bytes; got > before+PageSize/2 {
		t.Fatalf("the write into allocated pages stored %d more bytes", got-before)
	}
	wantErrno(t, "fallocate past MaxBytes", f.Allocate(20*PageSize, 4*PageSize, false), syscall.ENOSPC)
	wantErrno(t, "fallocate past MaxFileSize", f.Allocate(1<<30, 1, false), syscall.EFBIG)
	wantErrno(t, "fallocate of nothing", f.Allocate(0, 0, false), syscall.EINVAL)
}

// Writers, readers, truncates and open/close pairs on one file, over
// GOMAXPROCS 1 and 2, then the last unlink and close: the namespace's
// byte count returns to zero, and never exceeds MaxBytes meanwhile.
func TestSparseHammerChargesBalance(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprint(procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			const max = 64 * PageSize
			ns, f := newFile(t, Options{MaxBytes: max})
			f.Open()
			var wg sync.WaitGroup
			for g := 0; g < 4; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := rand.New(rand.NewPCG(uint64(g), 7))
					buf := make([]byte, 3*PageSize)
					for i := 0; i < 500; i++ {
						off := int64(r.IntN(100 * PageSize))
						switch r.IntN(5) {
						case 0, 1:
							f.WriteAt(buf[:r.IntN(len(buf))], off)
						case 2:
							f.ReadAt(buf, off)
						case 3:
							f.SetAttr(SetAttrIn{Valid: SetSize, Size: uint64(off)}, fuseCaller)
						case 4:
							f.Open()
							f.Allocate(off, PageSize, r.IntN(2) == 0)
							f.Close()
						}
						if b := ns.Statfs().Bytes; b > max {
							t.Errorf("%d bytes counted, MaxBytes %d", b, max)
							return
						}
					}
				}()
			}
			wg.Wait()
			if st := ns.Statfs(); st.Bytes != f.Attr().Stored {
				t.Fatalf("statfs %d, stored %d", st.Bytes, f.Attr().Stored)
			}
			if err := ns.Root().Unlink("f", fuseCaller); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if st := ns.Statfs(); st.Bytes != 0 {
				t.Fatalf("after the last unlink and close: %d bytes counted", st.Bytes)
			}
		})
	}
}
