package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A start-up error ends devfsd with one line naming the file and the
// reason and a non-zero exit status, and leaves nothing behind: no
// mount, no socket, no panic.
func TestStartupErrorsAreOneLine(t *testing.T) {
	held := t.TempDir()
	holder := start(t, opts{args: []string{"--socket=none", "--state-dir=" + held}})

	damaged := t.TempDir()
	if err := os.WriteFile(filepath.Join(damaged, "snapshot"), []byte("not a snapshot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missingDir := filepath.Join(t.TempDir(), "nonexistent")
	for _, tc := range []struct {
		name string
		args []string
		say  []string
	}{
		{"state dir held by another daemon", []string{"--state-dir=" + held}, []string{held, "in use by another devfsd"}},
		{"damaged snapshot", []string{"--state-dir=" + damaged}, []string{filepath.Join(damaged, "snapshot"), "damaged"}},
		{"audit log in a missing directory", []string{"--audit-log=" + filepath.Join(missingDir, "x.log")},
			[]string{filepath.Join(missingDir, "x.log"), "no such file or directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base, mnt := freshMount(t)
			sock := filepath.Join(base, "ctl.sock")
			code, out := runDevfsd(t, append(append([]string{"mount", "--socket=" + sock}, tc.args...), mnt))
			line := errorLine(t, out)
			if code == 0 {
				t.Errorf("exit status 0:\n%s", out)
			}
			for _, s := range tc.say {
				if !strings.Contains(line, s) {
					t.Errorf("error %q does not say %q", line, s)
				}
			}
			if mounted(t, mnt) {
				t.Errorf("%s is mounted after a failed start", mnt)
			}
			if _, err := os.Lstat(sock); !os.IsNotExist(err) {
				t.Errorf("the socket %s is left behind (%v)", sock, err)
			}
		})
	}
	if !holder.alive() || !mounted(t, holder.mnt) {
		t.Error("the daemon holding the state directory was disturbed")
	}
}
