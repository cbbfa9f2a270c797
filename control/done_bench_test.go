package control

import (
	"context"
	"fmt"
	"testing"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
)

// BenchmarkHelperMiss is one miss answered by a helper attached through
// the socket, in this process: the Load (package lookup's call for a
// miss), the LOOKUP record on the helper's stream, the helper's answer —
// one done carrying the registration (form=one), or a register and then
// a done (form=two) — and the Load's return.
//
//	go test -run '^$' -bench HelperMiss -benchmem -cpuprofile cpu.out ./control/
func BenchmarkHelperMiss(b *testing.B) {
	for _, form := range []string{"one", "two"} {
		b.Run("form="+form, func(b *testing.B) {
			r := newHelperRig(b, 1<<30)
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				ctx := context.Background()
				for {
					rec, err := r.hs.Next()
					if err != nil {
						return
					}
					if rec.Type != "lookup" {
						continue
					}
					reg := dev(rec.Path, 1, 3)
					if form == "one" {
						_, err = r.hs.Answer(ctx, wire.DoneRequest{ID: rec.ID, Register: []wire.RegisterRequest{reg}})
					} else if _, err = r.c.Register(ctx, reg); err == nil {
						err = r.hs.Done(ctx, rec.ID, "")
					}
					if err != nil {
						select {
						case <-stop:
						default:
							b.Errorf("answer: %v", err)
						}
						return
					}
				}
			}()
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := r.loader.Load(ctx, "", fmt.Sprintf("m%d", i), dcache.Caller{Pid: 1}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
