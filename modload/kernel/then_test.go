package kernel

import (
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

func TestThen(t *testing.T) {
	f := fakeMachine(t)
	r := newRig(t, Options{SysfsRoot: f.root, ModulesDevname: devnameFile(t, "tun net/tun c10:200"), Modprobe: "/bin/false"})
	must(t, r.src.Coldplug())
	var asked []string
	next := modload.LoaderFunc(func(_ context.Context, dir, name string, _ dcache.Caller) error {
		asked = append(asked, name)
		return nil
	})
	l := Then{Source: r.src, Next: next}
	// The source's names go to the source (tun: its modprobe fails).
	if err := l.Load(t.Context(), "", "net", modloadCaller); err == nil || errors.Is(err, syscall.ENOENT) {
		t.Errorf("net: %v, want the failing modprobe's error", err)
	}
	// Names it declines go to Next, which cannot decline.
	if l.Declines("", "nvidia0") {
		t.Error("nvidia0 declined though Next cannot say")
	}
	if err := l.Load(t.Context(), "", "nvidia0", modloadCaller); err != nil || len(asked) != 1 || asked[0] != "nvidia0" {
		t.Errorf("nvidia0: %v, Next asked %v", err, asked)
	}
	// Without Next, declined at once.
	l.Next = nil
	if !l.Declines("", "nvidia0") || l.Declines("", "net") {
		t.Error("without Next: Declines wrong")
	}
	if err := l.Load(t.Context(), "", "nvidia0", modloadCaller); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("nvidia0 without Next: %v", err)
	}
	if l.IsLoader(1) {
		t.Error("pid 1 is no loader")
	}
}
