package dcache

import (
	"fmt"
	"runtime"
	"testing"
	"unsafe"
)

// BenchmarkNodeMemory reports the live heap per idle node: 100,000 empty
// regular files registered in one directory (as the FUSE benchmark's
// populated tree), measured with runtime.MemStats after a GC. Names are
// made before the first measurement, so only the namespace's own memory
// counts (the daemon gets each name once from the kernel or the loader).
//
//	go test -run '^$' -bench NodeMemory -benchtime 1x ./dcache/
func BenchmarkNodeMemory(b *testing.B) {
	const n = 100000
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("d/f%07d", i)
	}
	var perNode float64
	for b.Loop() {
		ns := New(Options{MaxNodes: 2 * n})
		if _, err := ns.Register("d", Spec{Type: TypeDir, Mode: 0o755}, Caller{}); err != nil {
			b.Fatal(err)
		}
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		for _, p := range names {
			if _, err := ns.Register(p, Spec{Type: TypeRegular, Mode: 0o644}, Caller{}); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&m1)
		perNode = float64(m1.HeapAlloc-m0.HeapAlloc) / n
		runtime.KeepAlive(ns)
	}
	b.ReportMetric(perNode, "B/node")
	b.ReportMetric(float64(unsafe.Sizeof(Node{})), "B/Node-struct")
}
