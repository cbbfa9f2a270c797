package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
		var out, errb bytes.Buffer
		if err := run(context.Background(), args, &out, &errb); err != nil {
			t.Fatalf("%q: %v", args, err)
		}
		got := out.String()
		if !strings.HasPrefix(got, "devfsd ") || !strings.Contains(got, runtime.Version()) || !strings.HasSuffix(got, "\n") {
			t.Errorf("%q printed %q", args, got)
		}
	}
	old := version
	t.Cleanup(func() { version = old })
	version = "v9.8.7"
	if got := versionString(); !strings.HasPrefix(got, "devfsd v9.8.7 (") {
		t.Errorf("versionString() = %q with version set", got)
	}
}

// The -ldflags route, end to end: build the binary with a version and run it.
func TestVersionLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "devfsd")
	build := exec.Command("go", "build", "-ldflags", "-X main.version=v0.0.0-test", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), "devfsd v0.0.0-test (") {
		t.Errorf("--version printed %q", out)
	}
	// Exit statuses as main sets them.
	for _, tt := range []struct {
		args []string
		code int
		say  string
	}{
		{[]string{"helper", "--config", "/nonexistent/devfsd.conf"}, 2, "devfsd: helper: config: "},
		{[]string{"mount"}, 2, "mountpoint: missing"},
		{[]string{"mount", filepath.Join(t.TempDir(), "missing")}, 2, "mountpoint: stat"},
	} {
		cmd := exec.Command(bin, tt.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != tt.code {
			t.Errorf("%q: %v, want exit %d", tt.args, err, tt.code)
		}
		if !strings.Contains(stderr.String(), tt.say) {
			t.Errorf("%q: stderr %q does not say %q", tt.args, stderr.String(), tt.say)
		}
	}
}

func TestDispatch(t *testing.T) {
	mnt := t.TempDir()
	tests := []struct {
		args []string
		code int    // 0: success
		say  string // in the error, or in stdout on success
	}{
		{nil, 2, "no command"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
		{[]string{"helper", "--config", filepath.Join(mnt, "none.conf")}, 2, "helper: config: "},
		{[]string{"helper", "-h"}, 0, ""},
		{[]string{"helper", "--exec-timeout", "0s"}, 2, "--exec-timeout 0s is out of range"},
		{[]string{"helper", "stray"}, 2, "unexpected arguments"},
		{[]string{"ctl"}, 2, "ctl: no command given"},
		{[]string{"ctl", "frob"}, 2, `ctl: unknown command "frob"`},
		{[]string{"help"}, 0, "usage: devfsd"},
		{[]string{"-h"}, 0, ""},
		{[]string{"mount", "-h"}, 0, ""},
		{[]string{"mount"}, 2, "mountpoint: missing"},
		{[]string{"mount", "--bogus", mnt}, 2, "flag provided but not defined"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errb)
		if tt.code == 0 {
			if err != nil || !strings.Contains(out.String(), tt.say) {
				t.Errorf("%q: err %v, stdout %q", tt.args, err, out.String())
			}
			continue
		}
		if err == nil {
			t.Errorf("%q: no error", tt.args)
			continue
		}
		if got := exitCode(err); got != tt.code {
			t.Errorf("%q: exit code %d, want %d (%v)", tt.args, got, tt.code, err)
		}
		if !strings.Contains(err.Error(), tt.say) {
			t.Errorf("%q: error %q does not say %q", tt.args, err, tt.say)
		}
	}
}

// `devfsd mount -h` lists each flag once, each default once.
func TestMountHelpSaysEachDefaultOnce(t *testing.T) {
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"mount", "-h"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	help := errb.String()
	for _, line := range strings.Split(help, "\n") {
		if strings.Count(line, "(default ") > 1 {
			t.Errorf("a default said twice: %q", line)
		}
	}
	if n := strings.Count(help, "(default 0600)"); n != 1 {
		t.Errorf("(default 0600) appears %d times, want once:\n%s", n, help)
	}
	if !strings.Contains(help, "-socket-mode") || !strings.Contains(help, "-entry-timeout") {
		t.Errorf("help lacks flags:\n%s", help)
	}
}
