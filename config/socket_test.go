package config

import (
	"os"
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

// The default views_dir is the one the operator docs name.
func TestDefaultViewsDirIsDocumented(t *testing.T) {
	if Defaults().ViewsDir != DefaultViewsDir || DefaultViewsDir != "/run/devfsd/views" {
		t.Fatalf("views_dir default %q", Defaults().ViewsDir)
	}
	for _, doc := range []string{"../docs/operator.md", "../docs/api.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "`views_dir`") || !strings.Contains(string(b), DefaultViewsDir) {
			t.Errorf("%s does not document views_dir and its default %s", doc, DefaultViewsDir)
		}
	}
}
