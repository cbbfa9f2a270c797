package helper

import (
	"context"
	"os/exec"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/lookup"
)

// nopConn is a Conn that accepts every request and never answers.
type nopConn struct{}

func (nopConn) Send(Request) bool { return true }

// BenchmarkLookupHit measures a hit (lookup.Resolver.Lookup of a
// registered name) by a process that is not the helper, with the resolver
// wired as the daemon wires it (Options.IsLoader asks Loader.IsHelper):
// helper=none, no helper attached; helper=attached, a helper attached (a
// child of this process, so that an identity check on the hit would walk
// from this thread up to init). isloader/op is how often the predicate
// was asked per hit. Uses only the packages' APIs, so that it runs
// unchanged against an older tree for comparison.
func BenchmarkLookupHit(b *testing.B) {
	for _, attached := range []bool{false, true} {
		name := "helper=none"
		if attached {
			name = "helper=attached"
		}
		b.Run(name, func(b *testing.B) {
			l := New(nil)
			if attached {
				child := exec.Command("sleep", "600")
				if err := child.Start(); err != nil {
					b.Fatal(err)
				}
				s, err := l.Attach(dcache.Caller{Pid: uint32(child.Process.Pid)}, nopConn{})
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { s.Detach("benchmark over"); child.Process.Kill(); child.Wait() })
			}
			var calls atomic.Int64
			ns := dcache.New(dcache.Options{})
			if _, err := ns.Register("null", dcache.Spec{Type: dcache.TypeChar, Major: 1, Minor: 3},
				dcache.Caller{Origin: dcache.OriginBuiltin}); err != nil {
				b.Fatal(err)
			}
			r := lookup.New(ns, l, lookup.Options{IsLoader: func(c dcache.Caller) bool {
				calls.Add(1)
				return l.IsHelper(c.Pid)
			}})
			c := dcache.Caller{Pid: uint32(unix.Gettid()), Origin: dcache.OriginFUSE}
			ctx, root := context.Background(), ns.Root()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := r.Lookup(ctx, root, "null", c); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(calls.Load())/float64(b.N), "isloader/op")
		})
	}
}
