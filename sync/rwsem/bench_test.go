package rwsem

import (
	"fmt"
	"sync"
	"testing"
)

// Benchmarks against sync.RWMutex, measured in the same run. Sub-benchmark
// names end in impl=rwsem or impl=RWMutex so that
//
//	benchstat -col /impl
//
// prints them side by side. The bodies are duplicated rather than
// abstracted so that both sides make direct, inlinable calls.

var sink int

func BenchmarkUncontendedRead(b *testing.B) {
	b.Run("impl=rwsem", func(b *testing.B) {
		var s Sem
		for b.Loop() {
			s.DownRead()
			s.UpRead()
		}
	})
	b.Run("impl=RWMutex", func(b *testing.B) {
		var m sync.RWMutex
		for b.Loop() {
			m.RLock()
			m.RUnlock()
		}
	})
}

func BenchmarkUncontendedWrite(b *testing.B) {
	b.Run("impl=rwsem", func(b *testing.B) {
		var s Sem
		for b.Loop() {
			s.DownWrite()
			s.UpWrite()
		}
	})
	b.Run("impl=RWMutex", func(b *testing.B) {
		var m sync.RWMutex
		for b.Loop() {
			m.Lock()
			m.Unlock()
		}
	})
}

// BenchmarkMix runs gpp goroutines per P, each doing read sections and,
// one iteration in 100/(100-read), a write section, on one shared lock.
func BenchmarkMix(b *testing.B) {
	for _, read := range []int{95, 50} {
		for _, gpp := range []int{1, 8} {
			b.Run(fmt.Sprintf("read=%d/gpp=%d/impl=rwsem", read, gpp), func(b *testing.B) {
				var s Sem
				shared := 0
				b.SetParallelism(gpp)
				b.RunParallel(func(pb *testing.PB) {
					i, local := 0, 0
					for pb.Next() {
						i++
						if i%100 >= read {
							s.DownWrite()
							shared++
							s.UpWrite()
						} else {
							s.DownRead()
							local += shared
							s.UpRead()
						}
					}
					s.DownWrite()
					sink += local
					s.UpWrite()
				})
			})
			b.Run(fmt.Sprintf("read=%d/gpp=%d/impl=RWMutex", read, gpp), func(b *testing.B) {
				var m sync.RWMutex
				shared := 0
				b.SetParallelism(gpp)
				b.RunParallel(func(pb *testing.PB) {
					i, local := 0, 0
					for pb.Next() {
						i++
						if i%100 >= read {
							m.Lock()
							shared++
							m.Unlock()
						} else {
							m.RLock()
							local += shared
							m.RUnlock()
						}
					}
					m.Lock()
					sink += local
					m.Unlock()
				})
			})
		}
	}
}
