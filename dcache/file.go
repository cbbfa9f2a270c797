package dcache

import (
	"github.com/google/btree"
)

// Regular file content is sparse, as on tmpfs: a file is its size and a
// set of pages of PageSize bytes, keyed by page index; a range no write
// ever touched is a hole, stored as nothing and read as zeros. Truncating
// to a larger size, or writing far past the end, stores no zeros, so the
// only limit a file's size meets in practice is Options.MaxFileSize
// (default MaxFileSizeLimit, the kernel's own MAX_LFS_FILESIZE).
//
// A page is allocated only as far as it was written — a 10-byte file
// holds 10 bytes, not 4096 — and grows (doubling, up to PageSize) as
// writes reach further into it. What the pages hold (their capacity) is
// what the file stores: it is what Attr.Stored reports and what counts
// against Options.MaxBytes.
//
// Invariant: every byte of a page at or past the file's size is zero, so
// growing the size (truncate up) exposes zeros without touching a page.

// PageSize is the unit of sparse file content: the granularity of holes
// and of SEEK_DATA/SEEK_HOLE.
const PageSize = 4096

// MaxFileSizeLimit is the largest file size: Linux's MAX_LFS_FILESIZE on
// 64-bit, which is also the s_maxbytes of a FUSE mount and of tmpfs.
const MaxFileSizeLimit = int64(^uint64(0) >> 1)

// page is one stored page of a file.
type page struct {
	idx uint64 // offset / PageSize
	b   []byte // len == cap, at most PageSize; bytes past the file's size are zero
}

func pageLess(a, b *page) bool { return a.idx < b.idx }

// fileContent is a regular file's content. Guarded by the node's attrMu.
type fileContent struct {
	size   uint64
	stored int64                // sum of cap of the pages
	pages  *btree.BTreeG[*page] // nil until the first page is stored
	opens  int32                // open file descriptions (Node.Open)
}

// btreeDegree is the B-tree's degree: nodes of up to 2*degree-1 items.
const btreeDegree = 16

// get returns the page of index idx, or nil.
func (f *fileContent) get(idx uint64) *page {
	if f.pages == nil {
		return nil
	}
	p, _ := f.pages.Get(&page{idx: idx})
	return p
}

// readAt copies the content at off into p, zeros for holes, and returns
// the bytes read: 0 at or past the end.
func (f *fileContent) readAt(p []byte, off uint64) int {
	if off >= f.size {
		return 0
	}
	if rest := f.size - off; uint64(len(p)) > rest {
		p = p[:rest]
	}
	n := len(p)
	clear(p)
	if f.pages == nil || n == 0 {
		return n
	}
	end := off + uint64(n)
	first := &page{idx: off / PageSize}
	last := &page{idx: (end-1)/PageSize + 1}
	f.pages.AscendRange(first, last, func(pg *page) bool {
		start := pg.idx * PageSize // the page's first byte in the file
		from := max(start, off)
		to := min(start+uint64(len(pg.b)), end)
		if from < to {
			copy(p[from-off:to-off], pg.b[from-start:to-start])
		}
		return true
	})
	return n
}

// grow makes page idx hold at least need bytes, allocating or enlarging it
// with charge approving every byte added; it returns the page, or nil if
// charge refused.
func (f *fileContent) grow(idx uint64, need int, charge func(int64) bool) *page {
	pg := f.get(idx)
	if pg != nil && len(pg.b) >= need {
		return pg
	}
	old := 0
	if pg != nil {
		old = len(pg.b)
	}
	size := need
	if old > 0 {
		size = min(max(need, 2*old), PageSize) // amortised growth of a page written in pieces
	}
	if !charge(int64(size - old)) {
		if size > need && charge(int64(need-old)) {
			size = need // room for what is needed, not for the doubling
		} else {
			return nil
		}
	}
	b := make([]byte, size)
	f.stored += int64(size - old)
	if pg == nil {
		if f.pages == nil {
			f.pages = btree.NewG(btreeDegree, pageLess)
		}
		pg = &page{idx: idx, b: b}
		f.pages.ReplaceOrInsert(pg)
		return pg
	}
	copy(b, pg.b)
	pg.b = b
	return pg
}

// writeAt stores p at off, growing the size to cover it, and returns the
// bytes written: fewer than len(p) only when charge refused a page (then
// the size covers what was written).
func (f *fileContent) writeAt(p []byte, off uint64, charge func(int64) bool) int {
	done := 0
	for done < len(p) {
		pos := off + uint64(done)
		idx, in := pos/PageSize, int(pos%PageSize)
		k := min(PageSize-in, len(p)-done)
		pg := f.grow(idx, in+k, charge)
		if pg == nil {
			break
		}
		copy(pg.b[in:in+k], p[done:done+k])
		done += k
	}
	if end := off + uint64(done); done > 0 && end > f.size {
		f.size = end
	}
	return done
}

// allocate stores every page of [off, end) — as zeros where nothing was
// written — with charge approving every byte added, and reports whether
// all of it is stored (pages allocated before a refusal stay).
func (f *fileContent) allocate(off, end uint64, charge func(int64) bool) bool {
	for pos := off; pos < end; {
		idx := pos / PageSize
		need := int(min(end-idx*PageSize, PageSize))
		if f.grow(idx, need, charge) == nil {
			return false
		}
		pos = (idx + 1) * PageSize
	}
	return true
}

// truncate sets the size. Shrinking drops the pages wholly past the new
// end and zeroes the rest of the page it cuts, and returns the bytes no
// longer stored; growing stores nothing.
func (f *fileContent) truncate(size uint64) (freed int64) {
	if size >= f.size {
		f.size = size
		return 0
	}
	f.size = size
	if f.pages == nil {
		return 0
	}
	cut := (size + PageSize - 1) / PageSize // first page wholly past the end
	var gone []*page
	f.pages.AscendGreaterOrEqual(&page{idx: cut}, func(pg *page) bool {
		gone = append(gone, pg)
		return true
	})
	for _, pg := range gone {
		f.pages.Delete(pg)
		freed += int64(cap(pg.b))
	}
	if in := size % PageSize; in != 0 {
		if pg := f.get(size / PageSize); pg != nil && int(in) < len(pg.b) {
			clear(pg.b[in:])
		}
	}
	f.stored -= freed
	return freed
}

// drop forgets the whole content (the size stays) and returns the bytes
// it stored.
func (f *fileContent) drop() int64 {
	s := f.stored
	f.stored, f.pages = 0, nil
	return s
}

// seek implements SEEK_DATA (hole false) and SEEK_HOLE (hole true) from
// off, at page granularity: a stored page is data for its whole extent
// within the size, and the end of the file is a hole. ok is false when
// off is at or past the end, or (SEEK_DATA) no data follows it: ENXIO.
func (f *fileContent) seek(off uint64, hole bool) (uint64, bool) {
	if off >= f.size {
		return 0, false
	}
	idx := off / PageSize
	if !hole {
		var next *page
		if f.pages != nil {
			f.pages.AscendGreaterOrEqual(&page{idx: idx}, func(pg *page) bool {
				next = pg
				return false
			})
		}
		if next == nil {
			return 0, false
		}
		start := max(next.idx*PageSize, off)
		if start >= f.size {
			return 0, false
		}
		return start, true
	}
	// The first index at or after idx with no page.
	want := idx
	if f.pages != nil {
		f.pages.AscendGreaterOrEqual(&page{idx: idx}, func(pg *page) bool {
			if pg.idx != want {
				return false
			}
			want++
			return true
		})
	}
	start := max(want*PageSize, off)
	return min(start, f.size), true
}
