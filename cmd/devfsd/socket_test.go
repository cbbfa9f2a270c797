package main

import (
	"strings"
	"testing"

	"github.com/devfsd/devfsd/config"
)

func TestSocketConfig(t *testing.T) {
	mnt := t.TempDir()
	for _, tt := range []struct {
		args []string
		say  string // "" : valid
	}{
		{[]string{mnt}, ""},
		{[]string{"--socket=/tmp/x.sock", "--socket-mode=0660", "--control-uid=1000", "--control-gid=5", mnt}, ""},
		{[]string{"--socket=none", "--loader=none", mnt}, ""},
		{[]string{"--socket=rel.sock", mnt}, `socket: "rel.sock" is not an absolute path`},
		{[]string{"--socket=/" + strings.Repeat("s", 120), mnt}, "the limit of a Unix socket path"},
		{[]string{"--socket-mode=999", mnt}, `invalid mode "999"`},
		{[]string{"--socket-mode=0", mnt}, "socket_mode: 0000 is not a socket mode"},
		{[]string{"--control-uid=-2", mnt}, "control_uid: -2 is not a uid"},
		{[]string{"--loader=modprobe", mnt}, `loader: "modprobe" is not a loader`},
	} {
		cfg, err := loadConfig(tt.args, &strings.Builder{})
		if tt.say == "" {
			if err != nil {
				t.Errorf("%q: %v", tt.args, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.say) {
			t.Errorf("%q: %v, want %q", tt.args, err, tt.say)
		}
		_ = cfg
	}
	cfg, err := loadConfig([]string{mnt}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.SocketPath(cfg.Mountpoint) != config.DefaultSocket(cfg.Mountpoint) || cfg.SocketMode != 0600 || cfg.ControlUID != -1 {
		t.Errorf("defaults: %+v", cfg)
	}
	file := writeFile(t, t.TempDir(), "c.yaml", "socket: /run/x.sock\nsocket_mode: 0660\ncontrol_gid: 44\n")
	if err := config.ParseFile(&cfg, file); err != nil {
		t.Fatal(err)
	}
	if cfg.Socket != "/run/x.sock" || cfg.SocketMode != 0660 || cfg.ControlGID != 44 {
		t.Errorf("from YAML: %+v", cfg)
	}
}
