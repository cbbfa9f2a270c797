package main

import (
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/devfsd/devfsd/modload/devfsdconf"
)

func TestConfigExecLoaderFromFile(t *testing.T) {
	dir := t.TempDir()
	file := writeFile(t, dir, "devfsd.yaml", "loader: exec\nexec_program: /sbin/devfsd-load\nexec_timeout: 750ms\n")
	cfg, err := loadConfig([]string{"--config", file, dir}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Loader != "exec" || cfg.ExecProgram != "/sbin/devfsd-load" || cfg.ExecTimeout != 750*time.Millisecond {
		t.Errorf("got loader %q program %q timeout %v", cfg.Loader, cfg.ExecProgram, cfg.ExecTimeout)
	}
	cfg, err = loadConfig([]string{"--config", file, "--exec-timeout=2s", dir}, io.Discard)
	if err != nil || cfg.ExecTimeout != 2*time.Second {
		t.Errorf("the flag does not override the file: %v, %v", cfg.ExecTimeout, err)
	}
	if Defaults().ExecTimeout != 3*time.Second {
		t.Errorf("exec_timeout default %v", Defaults().ExecTimeout)
	}
}

func TestHelperFlags(t *testing.T) {
	var o helperOpts
	fs := helperFlags(&o)
	fs.SetOutput(io.Discard)
	if err := fs.Parse([]string{"--config", "/etc/x.conf", "-fg", "-np", "-v", "--mount", "/srv/dev", "--exec-timeout", "1s"}); err != nil {
		t.Fatal(err)
	}
	if o.config != "/etc/x.conf" || !o.fg || !o.np || !o.v || o.mount != "/srv/dev" || o.execTimeout != time.Second {
		t.Errorf("parsed %+v", o)
	}
	var d helperOpts
	helperFlags(&d).Parse(nil)
	if d.config != "/etc/devfsd.conf" || d.mount != "/dev" || d.fg || d.np || d.execTimeout != 3*time.Second {
		t.Errorf("defaults %+v", d)
	}
	if got := DefaultSocket(filepath.Clean(d.mount)); got != "/run/devfsd/dev.sock" {
		t.Errorf("default socket %q", got)
	}
}

func TestStMode(t *testing.T) {
	tests := []struct {
		typ, mode string
		want      uint32
	}{
		{"char", "0620", devfsdconf.TypeChar | 0620},
		{"block", "0660", devfsdconf.TypeBlock | 0660},
		{"dir", "1777", devfsdconf.TypeDir | 01777},
		{"symlink", "0777", devfsdconf.TypeLink | 0777},
		{"regular", "0644", devfsdconf.TypeReg | 0644},
	}
	for _, tt := range tests {
		if got := stMode(tt.typ, tt.mode); got != tt.want {
			t.Errorf("stMode(%s, %s) = %#o, want %#o", tt.typ, tt.mode, got, tt.want)
		}
	}
}
