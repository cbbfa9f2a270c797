package fs

import (
	"context"
	"fmt"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/lookup"
)

// The handlers' own cost per FUSE request, in process (no kernel, no
// go-fuse loop): what devfsd adds to each request on top of the transport
// that test/bench/fusebench measures end to end.

// declineAll is a loader that has nothing and says so at once, as the
// built-in catalogue does for a name it does not know.
type declineAll struct{}

func (declineAll) Load(context.Context, string, string, dcache.Caller) error { return syscall.ENOENT }
func (declineAll) Declines(string, string) bool                              { return true }

func benchServer(b *testing.B, files int) (*Server, []string) {
	ns := dcache.New(dcache.Options{NegativeTTL: -1})
	names := make([]string, files)
	for i := range names {
		names[i] = fmt.Sprintf("f%07d", i)
		if _, err := ns.Register(names[i], dcache.Spec{Type: dcache.TypeRegular, Mode: 0o644}, dcache.Caller{Origin: dcache.OriginLoader}); err != nil {
			b.Fatal(err)
		}
	}
	res := lookup.New(ns, declineAll{}, lookup.Options{})
	s := New(res, nil, Options{EntryTimeout: 1e9, AttrTimeout: 1e9})
	return s, names
}

// BenchmarkServerLookupCold is a LOOKUP of an existing name the kernel
// does not hold (the first stat of a cold tree), and the FORGET that lets
// the next round find it cold again.
func BenchmarkServerLookupCold(b *testing.B) {
	s, names := benchServer(b, 10000)
	h := &fuse.InHeader{NodeId: fuseRootID}
	var out fuse.EntryOut
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if st := s.Lookup(nil, h, names[i%len(names)], &out); st != fuse.OK {
			b.Fatal(st)
		}
		s.Forget(out.NodeId, 1)
	}
}

// BenchmarkServerChurn is the requests of one mknod+unlink pair as the
// kernel sends them with default_permissions: GETATTR of the directory,
// LOOKUP of the new name (a miss the loader declines), MKNOD, GETATTR of
// the directory, UNLINK, and the FORGET of the node.
func BenchmarkServerChurn(b *testing.B) {
	s, _ := benchServer(b, 0)
	h := &fuse.InHeader{NodeId: fuseRootID}
	ga := &fuse.GetAttrIn{InHeader: *h}
	mk := &fuse.MknodIn{InHeader: *h, Mode: syscall.S_IFREG | 0o644}
	var entry fuse.EntryOut
	var attr fuse.AttrOut
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("c%07d", i)
		if st := s.GetAttr(nil, ga, &attr); st != fuse.OK {
			b.Fatal(st)
		}
		if st := s.Lookup(nil, h, name, &entry); st != fuse.ENOENT {
			b.Fatal(st)
		}
		if st := s.Mknod(nil, mk, name, &entry); st != fuse.OK {
			b.Fatal(st)
		}
		id := entry.NodeId
		if st := s.GetAttr(nil, ga, &attr); st != fuse.OK {
			b.Fatal(st)
		}
		if st := s.Unlink(nil, h, name); st != fuse.OK {
			b.Fatal(st)
		}
		s.Forget(id, 1)
	}
}

// BenchmarkServerLookupMiss is a LOOKUP of a name nobody provides, with
// negative caching off (every lookup a miss the loader declines).
func BenchmarkServerLookupMiss(b *testing.B) {
	s, _ := benchServer(b, 0)
	h := &fuse.InHeader{NodeId: fuseRootID}
	var out fuse.EntryOut
	names := make([]string, 4096)
	for i := range names {
		names[i] = fmt.Sprintf("m%07d", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if st := s.Lookup(nil, h, names[i%len(names)], &out); st != fuse.ENOENT {
			b.Fatal(st)
		}
	}
}
