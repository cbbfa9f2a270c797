package main

import (
	"strings"
	"testing"
)

func TestDefaultSocket(t *testing.T) {
	for _, tt := range []struct{ mnt, want string }{
		{"/dev", "/run/devfsd/dev.sock"},
		{"/", "/run/devfsd/-.sock"},
		{"/tmp/a b/mnt", `/run/devfsd/tmp-a\x20b-mnt.sock`},
		{"/srv/my-dev/", `/run/devfsd/srv-my\x2ddev.sock`},
		{"/.hidden", `/run/devfsd/\x2ehidden.sock`},
	} {
		if got := DefaultSocket(tt.mnt); got != tt.want {
			t.Errorf("DefaultSocket(%q) = %q, want %q", tt.mnt, got, tt.want)
		}
	}
	long := "/" + strings.Repeat("x", 200)
	got := DefaultSocket(long)
	if len(got) > maxSocketPath || !strings.HasPrefix(got, SocketDir+"/") || got == DefaultSocket(long+"y") {
		t.Errorf("DefaultSocket of a long path = %q", got)
	}
}

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
	if cfg.SocketPath(cfg.Mountpoint) != DefaultSocket(cfg.Mountpoint) || cfg.SocketMode != 0600 || cfg.ControlUID != -1 {
		t.Errorf("defaults: %+v", cfg)
	}
	if err := parseYAML(&cfg, []byte("socket: /run/x.sock\nsocket_mode: 0660\ncontrol_gid: 44\n")); err != nil {
		t.Fatal(err)
	}
	if cfg.Socket != "/run/x.sock" || cfg.SocketMode != 0660 || cfg.ControlGID != 44 {
		t.Errorf("from YAML: %+v", cfg)
	}
}
