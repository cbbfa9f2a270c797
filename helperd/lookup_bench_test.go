package helperd

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/modload/devfsdconf"
)

// benchNames are test/bench/helpermiss's names: each provided by a
// different catalogue module.
var benchNames = strings.Fields("loop0 tty1 ttyS0 kvm vhost-net vhost-vsock fuse cuse uinput fb0 nvidia0 dsp " +
	"i2c-0 watchdog hwrng btrfs-control autofs uhid rfkill ppp net input dri snd mapper vfio " +
	"sda sdb sdc sdd sde sdf sdg sdh sdi sdj sdk sdl sdm sdn sdo sdp sdq sdr sds sdt sdu sdv sdw sdx sdy sdz")

// BenchmarkLookupModload is the helper's own work for a LOOKUP that
// "LOOKUP .* MODLOAD" answers from the catalogue: the rules run, the
// module's registrations kept for the done. No request is made (the
// socket is never dialled). The loader Prepare makes between events is
// not counted.
func BenchmarkLookupModload(b *testing.B) {
	c := client.New("/nonexistent-socket")
	defer c.Close()
	h, err := newHelperHost(context.Background(), Options{Mount: "/nonexistent-mount"}, c, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := devfsdconf.Parse("bench.conf", []byte("LOOKUP .* MODLOAD\n"), devfsdconf.Options{Mountpoint: "/nonexistent-mount"})
	if err != nil {
		b.Fatal(err)
	}
	e := &devfsdconf.Engine{Host: h, Mountpoint: "/nonexistent-mount", Log: zap.NewNop()}
	regs := 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		h.Prepare() // between events, as helperd does
		b.StartTimer()
		h.startBatch()
		err := e.Handle(context.Background(), cfg, devfsdconf.Event{Kind: devfsdconf.Lookup, Name: benchNames[i%len(benchNames)]})
		bt := h.endBatch()
		if err != nil || len(bt.errs) > 0 || len(bt.regs) == 0 {
			b.Fatalf("%s: %v %v, %d registrations", benchNames[i%len(benchNames)], err, bt.errs, len(bt.regs))
		}
		regs += len(bt.regs)
	}
	b.ReportMetric(float64(regs)/float64(b.N), "regs/op")
}
