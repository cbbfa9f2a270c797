package daemon

import (
	"testing"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/modload/kernel"
)

func TestChooseDevices(t *testing.T) {
	cfg := config.Defaults()
	want := "catalogue"
	if ok, _ := kernel.Usable("/sys"); ok {
		want = "kernel" // this machine's sysfs, the initial user namespace
	}
	if got, why := chooseDevices(cfg); got != want || why == "" {
		t.Errorf("default: %q (%s), want %q", got, why, want)
	}
	cfg.Modules = []config.Module{{Name: "x"}}
	if got, _ := chooseDevices(cfg); got != "catalogue" {
		t.Errorf("default with modules: %q, want catalogue", got)
	}
	for _, d := range []string{"kernel", "catalogue", "none"} {
		cfg.Devices = d
		if got, why := chooseDevices(cfg); got != d || why != "configured" {
			t.Errorf("devices %s: %q (%s)", d, got, why)
		}
	}
}
