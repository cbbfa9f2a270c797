package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"go.uber.org/zap"
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

// A server that cannot mount fails clearly and never tells systemd it is
// ready.
func TestMountFailureIsNotReady(t *testing.T) {
	sd := newFakeSystemd(t)
	old := serve
	t.Cleanup(func() { serve = old })
	boom := errors.New("cannot mount on DIR: mount(2) as root: EPERM; fusermount3: exit 1")
	serve = func(ctx context.Context, cfg Config, log *zap.Logger, ready func()) error {
		return boom
	}
	var errb bytes.Buffer
	err := run(context.Background(), []string{"mount", t.TempDir()}, &bytes.Buffer{}, &errb)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the mount error", err)
	}
	for _, msg := range sd.pending() {
		if msg == "READY=1" {
			t.Error("READY=1 sent though nothing was mounted")
		}
	}
}

// With a stand-in server: READY=1 when it says the mount is live, then
// SIGTERM cancels its context, STOPPING=1 is sent, and run returns nil.
func TestMountReadyThenSIGTERMStopsCleanly(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			sd := newFakeSystemd(t)
			gotCfg := make(chan Config, 1)
			old := serve
			t.Cleanup(func() { serve = old })
			serve = func(ctx context.Context, cfg Config, log *zap.Logger, ready func()) error {
				gotCfg <- cfg
				ready()
				<-ctx.Done()
				return nil
			}
			mnt := t.TempDir()
			done := make(chan error, 1)
			var errb bytes.Buffer
			go func() {
				done <- run(context.Background(), []string{"mount", "--entry-timeout=0", mnt}, &bytes.Buffer{}, &errb)
			}()
			if got := sd.next(); got != "READY=1" {
				t.Fatalf("first notification %q, want READY=1", got)
			}
			if cfg := <-gotCfg; cfg.Mountpoint != mnt || cfg.EntryTimeout != 0 {
				t.Errorf("serve got %+v", cfg)
			}
			if err := syscall.Kill(os.Getpid(), sig); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("run = %v after %v", err, sig)
			}
			if got := sd.next(); got != "STOPPING=1" {
				t.Errorf("notification %q, want STOPPING=1", got)
			}
			if extra := sd.pending(); len(extra) != 0 {
				t.Errorf("extra notifications %q", extra)
			}
			if !strings.Contains(errb.String(), "stopped") {
				t.Errorf("log does not say stopped: %s", errb.String())
			}
		})
	}
}

// A server failing while running is an error with exit status 1, and
// systemd still hears STOPPING=1.
func TestMountServerFailure(t *testing.T) {
	sd := newFakeSystemd(t)
	old := serve
	t.Cleanup(func() { serve = old })
	boom := errors.New("fuse: connection lost")
	serve = func(ctx context.Context, cfg Config, log *zap.Logger, ready func()) error {
		ready()
		return boom
	}
	err := run(context.Background(), []string{"mount", t.TempDir()}, &bytes.Buffer{}, &bytes.Buffer{})
	if !errors.Is(err, boom) || exitCode(err) != 1 {
		t.Fatalf("err = %v (exit %d), want the server's error, exit 1", err, exitCode(err))
	}
	if got := sd.pending(); len(got) != 2 || got[0] != "READY=1" || got[1] != "STOPPING=1" {
		t.Errorf("notifications %q, want READY=1 then STOPPING=1", got)
	}
}
