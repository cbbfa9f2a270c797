package config

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
