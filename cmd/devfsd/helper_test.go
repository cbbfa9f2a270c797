package main

import (
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/devfsd/devfsd/config"
	"github.com/devfsd/devfsd/helperd"
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
	if config.Defaults().ExecTimeout != 3*time.Second {
		t.Errorf("exec_timeout default %v", config.Defaults().ExecTimeout)
	}
}

func TestHelperFlags(t *testing.T) {
	var o helperd.Options
	var v, check bool
	var format string
	fs := helperFlags(&o, &v, &check, &format)
	fs.SetOutput(io.Discard)
	if err := fs.Parse([]string{"--config", "/etc/x.conf", "-fg", "-np", "-v", "--mount", "/srv/dev", "--exec-timeout", "1s"}); err != nil {
		t.Fatal(err)
	}
	if o.Config != "/etc/x.conf" || !o.Foreground || !o.NoPoll || !v || o.Mount != "/srv/dev" || o.ExecTimeout != time.Second {
		t.Errorf("parsed %+v", o)
	}
	var d helperd.Options
	helperFlags(&d, &v, &check, &format).Parse(nil)
	if d.Config != "/etc/devfsd.conf" || d.Mount != "/dev" || d.Foreground || d.NoPoll || d.ExecTimeout != 3*time.Second || format != "auto" {
		t.Errorf("defaults %+v", d)
	}
	if got := config.DefaultSocket(filepath.Clean(d.Mount)); got != "/run/devfsd/dev.sock" {
		t.Errorf("default socket %q", got)
	}
}
