package helper

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
)

// BenchmarkIdentityCandidates measures the ways of answering "is thread
// TID the helper or its descendant?" that proc.go's doc weighs, each for a
// descendant (a child of this process, taken for the helper) and for a
// stranger (this process, with the child taken for the helper: the walk
// then climbs to init), and the kept verdict that answers a caller
// asking again. The figures are in proc.go's doc.
func BenchmarkIdentityCandidates(b *testing.B) {
	child := exec.Command("sleep", "300")
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := child.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { child.Process.Kill(); child.Wait() })
	self, kid := uint32(os.Getpid()), uint32(child.Process.Pid)
	selfStart, err := startTime(self)
	if err != nil {
		b.Fatal(err)
	}
	kidStart, err := startTime(kid)
	if err != nil {
		b.Fatal(err)
	}
	type pair struct {
		name          string
		tid, helper   uint32
		helperStart   uint64
		wantDescended bool
	}
	pairs := []pair{
		{"descendant", kid, self, selfStart, true},
		{"stranger", uint32(unix.Gettid()), kid, kidStart, false},
	}
	for _, p := range pairs {
		b.Run("how=proc-walk/"+p.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if isDescendant(p.tid, p.helper, p.helperStart, -1) != p.wantDescended {
					b.Fatal("wrong answer")
				}
			}
		})
		b.Run("how=pidfd-walk/"+p.name, func(b *testing.B) {
			hfd, err := unix.PidfdOpen(int(p.helper), 0)
			if err != nil {
				b.Skipf("pidfd_open: %v", err)
			}
			defer unix.Close(hfd)
			if _, err := pidfdDescends(p.tid, p.helper, hfd); err != nil {
				b.Skipf("pidfd walk: %v", err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if ok, _ := pidfdDescends(p.tid, p.helper, hfd); ok != p.wantDescended {
					b.Fatal("wrong answer")
				}
			}
		})
		// A caller that asks again: the session's kept verdict
		// (verdicts.go), one ppoll of the chain's pidfds.
		b.Run("how=kept-verdict/"+p.name, func(b *testing.B) {
			l := New(nil)
			s, err := l.Attach(dcache.Caller{Pid: p.helper}, nopConn{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Detach("benchmark over")
			if l.IsHelper(p.tid) != p.wantDescended {
				b.Fatal("wrong answer")
			}
			if kept(s, p.tid) == nil {
				b.Skip("no verdict kept (a chain too long?)")
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if l.IsHelper(p.tid) != p.wantDescended {
					b.Fatal("wrong answer")
				}
			}
		})
	}
	// One /proc read per question: what a verdict cache keyed by (tid,
	// start time) would pay on every use.
	b.Run("how=proc-stat-read", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := startTime(kid); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("how=proc-cgroup-read", func(b *testing.B) {
		p := "/proc/" + strconv.Itoa(int(kid)) + "/cgroup"
		for i := 0; i < b.N; i++ {
			if _, err := os.ReadFile(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The kernel's own answers, one system call each.
	b.Run("how=getpgid", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := unix.Getpgid(int(kid)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("how=getsid+pidfd-alive", func(b *testing.B) {
		hfd, err := unix.PidfdOpen(int(kid), 0)
		if err != nil {
			b.Skipf("pidfd_open: %v", err)
		}
		defer unix.Close(hfd)
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			sid, err := unix.Getsid(int(kid))
			if err != nil || uint32(sid) != kid || unix.PidfdSendSignal(hfd, 0, nil, 0) != nil {
				b.Fatal("wrong answer")
			}
		}
	})
}
