package integration

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `devfsd helper --check --config FILE` prints per file and line what
// runs and what is left out and why, and exits 1 only when devfsd 1.3.25
// itself would have refused the file (2 when it cannot be read at all).
// It attaches to nothing: no daemon runs here.
func TestConfCheck(t *testing.T) {
	own := filepath.Join(t.TempDir(), "devfsd.conf")
	if err := os.WriteFile(own, []byte("REGISTER ^fd[0-7] PERMISSIONS root.nosuchgroup-here rw-rw----\n"+
		"REGISTER ^x$ CFUNCTION /lib/libx.so f\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	refused := filepath.Join(t.TempDir(), "devfsd.conf")
	if err := os.WriteFile(refused, []byte("REGISTER ^a$ PERMISSIONS rootroot 0600\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file string
		code       int
		out        []string
	}{
		{"crux", realConf("nipuL+crux-core.devfsd.conf"), 0, []string{
			"nipuL+crux-core.devfsd.conf:5: runs: REGISTER .* MKOLDCOMPAT\n",
			"nipuL+crux-core.devfsd.conf:8: runs: LOOKUP .* MODLOAD\n",
			"1 files, 3 rules run, 0 restores; 0 lines left out, 0 of which devfsd 1.3.25 would have refused\n",
		}},
		{"busybox as shipped", realConf("mirror+busybox.examples.devfsd.conf"), 1, []string{
			"mirror+busybox.examples.devfsd.conf:36: runs: REGISTER ^pty/s.* PERMISSIONS uid unchanged gid ",
			"mirror+busybox.examples.devfsd.conf:67: left out: EXECUTE /bin/ln with the relative path cdrom",
			"mirror+busybox.examples.devfsd.conf:128: left out (devfsd 1.3.25 exits here too): INCLUDE /etc/devfs/busybox/: no such file or directory",
			"1 files, 24 rules run, 1 restores; 11 lines left out, 1 of which devfsd 1.3.25 would have refused\n",
		}},
		{"an unknown group and a shared object", own, 0, []string{
			"devfsd.conf:1: runs: REGISTER ^fd[0-7] PERMISSIONS uid 0 gid 0 mode 0660\n",
			`devfsd.conf:1: warning: unknown group "nosuchgroup-here": gid 0 (root) is used instead, as devfsd did`,
			"devfsd.conf:2: left out: CFUNCTION /lib/libx.so f calls a function in a shared object",
		}},
		{"a line devfsd exited on", refused, 1, []string{
			`devfsd.conf:1: left out (devfsd 1.3.25 exits here too): PERMISSIONS rootroot 0600: owner "rootroot": want USER.GROUP`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(devfsdBin, "helper", "--check", "--config="+tt.file)
			cmd.Dir = "/"
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var x *exec.ExitError
			if errors.As(err, &x) {
				code = x.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout.String(), stderr.String())
			}
			for _, s := range tt.out {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("the report lacks %q:\n%s", s, stdout.String())
				}
			}
		})
	}
	// A configuration that cannot be read is a usage error.
	out, err := exec.Command(devfsdBin, "helper", "--check", "--config=/nonexistent/devfsd.conf").CombinedOutput()
	var x *exec.ExitError
	if !errors.As(err, &x) || x.ExitCode() != 2 || !strings.Contains(string(out), "/nonexistent/devfsd.conf") {
		t.Errorf("an unreadable configuration: %v %s, want exit 2 naming it", err, out)
	}
}
