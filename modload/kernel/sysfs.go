package kernel

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// Device is one device of the kernel that has a node: what its uevent (or
// its sysfs uevent file) says, and the node devfsd registers for it.
type Device struct {
	// Node is the node: DEVNAME, the type (block for SUBSYSTEM block, else
	// char), MAJOR:MINOR, and the mode and owner of DEVMODE, DEVUID,
	// DEVGID or the defaults.
	Node      modload.Node
	DevPath   string // "/devices/virtual/mem/null"
	Subsystem string // "mem"
	Driver    string // the bound driver, "" if none
	// Env is every uevent variable, with SUBSYSTEM, DEVPATH and (if bound)
	// DRIVER added for a device read from sysfs. Never changed in place:
	// a Device's Env is replaced whole.
	Env map[string]string
	Seq uint64 // the SEQNUM of the last uevent applied; 0 for a scan
}

// clone returns d with a copy of Env.
func (d Device) clone() Device {
	d.Env = maps.Clone(d.Env)
	return d
}

// scanError is one sysfs entry that could not be read or was refused.
type scanError struct {
	entry string
	err   error
}

func (e scanError) Error() string { return fmt.Sprintf("%s: %v", e.entry, e.err) }

// scan reads every device of root/dev/char and root/dev/block. Entries
// that vanish while being read (a device removed meanwhile) are left out
// silently; entries that are malformed are left out and reported in bad.
// Only a directory that cannot be listed fails the scan.
func scan(root string, defaults func(dcache.Type, string) (uint32, uint32, uint32)) (devs []Device, bad []scanError, err error) {
	for _, kind := range []struct {
		dir string
		t   dcache.Type
	}{{"char", dcache.TypeChar}, {"block", dcache.TypeBlock}} {
		dir := filepath.Join(root, "dev", kind.dir)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return nil, nil, fmt.Errorf("kernel: sysfs: %w", err)
		}
		for _, e := range ents {
			d, ok, err := readDevice(root, dir, e.Name(), kind.t, defaults)
			switch {
			case errors.Is(err, fs.ErrNotExist):
			case err != nil:
				bad = append(bad, scanError{filepath.Join(dir, e.Name()), err})
			case ok:
				devs = append(devs, d)
			}
		}
	}
	return devs, bad, nil
}

// readDevice reads the device dir/name ("M:m", a link to the device's
// directory); ok is false for a device without a node name.
func readDevice(root, dir, name string, t dcache.Type, defaults func(dcache.Type, string) (uint32, uint32, uint32)) (Device, bool, error) {
	maj, min, ok := strings.Cut(name, ":")
	if !ok {
		return Device{}, false, malformed("entry %q is not MAJOR:MINOR", trunc(name))
	}
	entry := filepath.Join(dir, name)
	env, err := readUeventFile(filepath.Join(entry, "uevent"))
	if err != nil {
		return Device{}, false, err
	}
	if env["MAJOR"] != maj || env["MINOR"] != min {
		if _, has := env["DEVNAME"]; has {
			return Device{}, false, malformed("entry %s has MAJOR=%q MINOR=%q", name, trunc(env["MAJOR"]), trunc(env["MINOR"]))
		}
	}
	n, ok, err := NodeOf(env, t, defaults)
	if err != nil || !ok {
		return Device{}, false, err
	}
	d := Device{Node: n, Env: env}
	target, err := os.Readlink(entry)
	if err != nil {
		return Device{}, false, err
	}
	abs := filepath.Join(dir, target)
	rel, err := filepath.Rel(root, abs)
	if err != nil || rel == "." || strings.HasPrefix(rel, "../") {
		return Device{}, false, malformed("entry %s links outside sysfs (%s)", name, trunc(target))
	}
	d.DevPath = "/" + filepath.ToSlash(rel)
	if err := checkDevPath(d.DevPath); err != nil {
		return Device{}, false, err
	}
	d.Subsystem = linkBase(filepath.Join(entry, "subsystem"))
	d.Driver = linkBase(filepath.Join(entry, "driver"))
	for k, v := range map[string]string{"DEVPATH": d.DevPath, "SUBSYSTEM": d.Subsystem, "DRIVER": d.Driver} {
		if _, has := env[k]; !has && v != "" {
			env[k] = v
		}
	}
	return d, true, nil
}

// readUeventFile reads and parses a sysfs uevent file, at most MaxUevent
// bytes.
func readUeventFile(p string) (map[string]string, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxUevent+1))
	if err != nil {
		return nil, err
	}
	return ParseUeventFile(data)
}

// linkBase returns the last element of the target of symlink p ("mem" for
// subsystem -> ../../class/mem), "" if p is no symlink.
func linkBase(p string) string {
	t, err := os.Readlink(p)
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

// numberEntry is the sysfs entry of a device number: "char/10:229".
func numberEntry(t dcache.Type, major, minor uint32) string {
	kind := "char"
	if t == dcache.TypeBlock {
		kind = "block"
	}
	return filepath.Join(kind, strconv.FormatUint(uint64(major), 10)+":"+strconv.FormatUint(uint64(minor), 10))
}
