package config

import (
	"strings"
	"testing"
)

func TestValidateDevices(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
		bad  string // a key the error names; "" valid
	}{
		{"default", func(*Config) {}, ""},
		{"kernel", func(c *Config) { c.Devices = "kernel" }, ""},
		{"catalogue", func(c *Config) { c.Devices = "catalogue" }, ""},
		{"none", func(c *Config) { c.Devices = "none" }, ""},
		{"unknown", func(c *Config) { c.Devices = "udev" }, "devices"},
		{"kernel with its files", func(c *Config) {
			c.Devices, c.ModulesDevname, c.Modprobe = "kernel", "/x/modules.devname", "/sbin/modprobe"
		}, ""},
		{"default with its files", func(c *Config) { c.ModulesDevname, c.Modprobe = "/x/modules.devname", "/sbin/modprobe" }, ""},
		{"relative modprobe", func(c *Config) { c.Modprobe = "modprobe" }, "modprobe"},
		{"relative modules.devname", func(c *Config) { c.ModulesDevname = "modules.devname" }, "modules_devname"},
		{"modprobe with the catalogue", func(c *Config) { c.Devices, c.Modprobe = "catalogue", "/sbin/modprobe" }, "modprobe"},
		{"modules.devname with none", func(c *Config) { c.Devices, c.ModulesDevname = "none", "/m" }, "modules_devname"},
		{"modules with kernel", func(c *Config) { c.Devices, c.Modules = "kernel", []Module{{Name: "x"}} }, "modules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Defaults()
			c.Mountpoint = t.TempDir()
			tc.set(&c)
			err := c.Validate()
			switch {
			case tc.bad == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad+":")):
				t.Fatalf("error %v, want one naming %s", err, tc.bad)
			}
		})
	}
}

func TestParseFileDevices(t *testing.T) {
	c := Defaults()
	if err := parseYAML(&c, []byte("devices: kernel\nmodules_devname: /m/modules.devname\nmodprobe: /bin/modprobe\n")); err != nil {
		t.Fatal(err)
	}
	if c.Devices != "kernel" || c.ModulesDevname != "/m/modules.devname" || c.Modprobe != "/bin/modprobe" {
		t.Fatalf("parsed %q %q %q", c.Devices, c.ModulesDevname, c.Modprobe)
	}
}
