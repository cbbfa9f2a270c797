package daemon

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/builtin"
	"github.com/devfsd/devfsd/modload/kernel"
)

// chooseDevices resolves cfg.Devices: empty is kernel where this
// machine's sysfs lists devices and the daemon is in the initial user
// namespace (kernel.Usable), unless extension modules (of the catalogue)
// are set; else catalogue. why says what decided, for the start's log.
func chooseDevices(cfg config.Config) (devices, why string) {
	switch {
	case cfg.Devices != "":
		return cfg.Devices, "configured"
	case len(cfg.Modules) > 0:
		return "catalogue", "modules (extensions of the catalogue) are set"
	}
	ok, why := kernel.Usable("/sys")
	if ok {
		return "kernel", why
	}
	return "catalogue", why
}

// startDevices fills ns from the device source: with kernel, the
// kernel source is started (coldplug, then hotplug) and returned; with
// catalogue, the built-in base set is registered. With kernel and none,
// the base set's links and directories (fd, stdin, stdout, stderr, pts,
// shm) are registered, never its devices: a device is the kernel's or
// nobody's.
func startDevices(devices string, cfg config.Config, ns *dcache.Namespace, bl *builtin.Loader, handedOver bool, owned map[string]uint64, log *zap.Logger) (*kernel.Source, error) {
	var ks *kernel.Source
	switch devices {
	case "catalogue":
		if handedOver {
			return nil, nil // the predecessor's tree has the base set, as its users left it
		}
		if err := bl.RegisterBase(context.Background()); err != nil {
			return nil, fmt.Errorf("registering the base set: %w", err)
		}
		return nil, nil
	case "kernel":
		var err error
		ks, err = kernel.New(kernel.Options{
			// Kernel registrations are the daemon's own (dcache has no
			// origin of the kernel's yet).
			Namespace:      kernel.DcacheNamespace{NS: ns, Caller: dcache.Caller{Origin: dcache.OriginKernel}},
			ModulesDevname: cfg.ModulesDevname,
			Modprobe:       cfg.Modprobe,
			Owned:          owned,
			Logger:         log,
		})
		if err != nil {
			return nil, err
		}
		if err := ks.Start(); err != nil {
			return nil, err
		}
	}
	reg := nsRegistrar{ns}
	for _, n := range builtin.Base().Nodes {
		if n.Type != dcache.TypeSymlink && n.Type != dcache.TypeDir {
			continue
		}
		if err := modload.IgnoreExist(reg.Register(n)); err != nil {
			if ks != nil {
				ks.Close()
			}
			return nil, fmt.Errorf("registering %s: %w", n.Path, err)
		}
	}
	return ks, nil
}

// kernelStats are the kernel source's counters for the control socket's
// stats (nil source: none).
func kernelStats(ks *kernel.Source, into map[string]uint64) {
	if ks == nil {
		return
	}
	st := ks.Stats()
	for action, n := range st.Received {
		into["kernel_uevents_"+action] = n
	}
	into["kernel_uevents_forged"] = st.Forged
	into["kernel_uevents_malformed"] = st.Malformed
	into["kernel_uevents_stale"] = st.Stale
	into["kernel_overruns"] = st.Overruns
	into["kernel_rescans"] = st.Rescans
	into["kernel_collisions"] = st.Collisions
	into["kernel_autoloads"] = st.Autoloads
	into["kernel_autoload_failures"] = st.AutoloadFailures
	into["kernel_devices"] = uint64(st.Devices)
	into["kernel_registered"] = uint64(st.Registered)
}

// kernelControl is the kernel source as the control socket uses it (GET
// /v1/info, POST /v1/trigger).
type kernelControl struct{ ks *kernel.Source }

func (k kernelControl) Info(p string) (wire.DeviceInfo, bool) {
	dev, registered, ok := k.ks.Info(p)
	if !ok {
		return wire.DeviceInfo{}, false
	}
	return wire.DeviceInfo{Path: dev.Node.Path, Type: dev.Node.Type.String(), Major: dev.Node.Major, Minor: dev.Node.Minor,
		DevPath: dev.DevPath, Subsystem: dev.Subsystem, Driver: dev.Driver, Registered: registered,
		Env: dev.Env}, true
}

func (k kernelControl) Trigger(context.Context) (wire.Trigger, error) {
	if err := k.ks.Rescan(); err != nil {
		return wire.Trigger{}, err
	}
	st := k.ks.Stats()
	return wire.Trigger{Devices: st.Devices, Registered: st.Registered, Rescans: st.Rescans}, nil
}
