package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devfsd/devfsd/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// TestQuickRun builds fusebench and runs it once in -quick mode: a smoke
// test that every case runs on every available backend and the report has
// a row for each (rawfloor: each stat case, and nothing else). It checks
// no figure: timings under test load mean nothing.
func TestQuickRun(t *testing.T) {
	bin, err := harness.Build("github.com/devfsd/devfsd/test/bench/fusebench")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-quick")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fusebench -quick: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), out)
	}
	report := string(out)
	for _, want := range []string{
		"| stat hit, timeouts 0, 1 thread | barefs |",
		"| stat hit, timeouts 1s, warm, 2 threads | tmpfs |",
		"| stat miss, negative 1s, warm, 1 thread | barefs |",
		"| readdir 1000, 2 threads | barefs/rdp-off |",
		"| ls -l 300, 1 thread | barefs |",
		"| mknod+unlink churn, 2 threads | barefs |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks a row %q:\n%s", want, report)
		}
	}
	// Every other backend has its rows too. fusebench leaves out (saying
	// why on stderr) a backend the harness finds unavailable, which for
	// devfsd meant the FUSE server not built yet: with it in the tree, and
	// tmpfs there for root, leaving either out is a failure here.
	for _, b := range []string{"tmpfs", "devfsd"} {
		if strings.Contains(stderr.String(), "fusebench: leaving out "+b+":") {
			t.Errorf("fusebench left out %s:\n%s", b, stderr.String())
			continue
		}
		for _, want := range []string{
			"| stat hit, timeouts 0, 1 thread | " + b + " |",
			"| readdir 1000, 2 threads | " + b + " |",
			"| mknod+unlink churn, 2 threads | " + b + " |",
		} {
			if !strings.Contains(report, want) {
				t.Errorf("report lacks a row %q:\n%s", want, report)
			}
		}
	}
	// rawfloor (in the default -backends) has rows in the stat cases, and
	// only there; it counts requests as barefs does.
	for _, want := range []string{
		"| stat hit, timeouts 0, 1 thread | rawfloor |",
		"| stat hit, timeouts 1s, cold, 1 thread | rawfloor |",
		"| stat hit, timeouts 1s, cold, 2 threads | rawfloor |",
		"| stat hit, timeouts 1s, warm, 2 threads | rawfloor |",
		"| stat miss, negative 0, 1 thread | rawfloor |",
		"| stat miss, negative 1s, warm, 2 threads | rawfloor |",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks a row %q:\n%s", want, report)
		}
	}
	for _, l := range strings.Split(report, "\n") {
		if !strings.Contains(l, "| rawfloor") {
			continue
		}
		if !strings.HasPrefix(l, "| stat ") {
			t.Errorf("rawfloor runs outside the stat cases: %q", l)
		}
		if f := strings.Split(l, "|"); strings.HasPrefix(l, "| stat hit, timeouts 0, ") &&
			(strings.TrimSpace(f[5]) == "n/a" || strings.TrimSpace(f[5]) == "0.00") {
			t.Errorf("rawfloor requests per cold stat: %q", f[5])
		}
	}
	// barefs counts requests: with timeouts 0 a stat is at least one.
	for _, l := range strings.Split(report, "\n") {
		if strings.HasPrefix(l, "| stat hit, timeouts 0, 1 thread | barefs |") {
			f := strings.Split(l, "|")
			if strings.TrimSpace(f[5]) == "n/a" || strings.TrimSpace(f[5]) == "0.00" {
				t.Errorf("barefs requests per cold stat: %q", f[5])
			}
		}
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("stderr:\n%s", stderr.String())
	harness.CheckNoMounts(t)
}

// TestDevfsdOld runs fusebench -quick with -devfsd-old naming a devfsd
// binary (this tree's, built apart): devfsd-old gets rows of its own,
// READDIRPLUS variants included, and the report ends with a new/old row for each
// devfsd variant of each case run. Bad uses of the flag are refused
// before anything is mounted.
func TestDevfsdOld(t *testing.T) {
	bin, err := harness.Build("github.com/devfsd/devfsd/test/bench/fusebench")
	if err != nil {
		t.Fatal(err)
	}
	devfsd, err := harness.Build(harness.DevfsdPkg)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-devfsd-old", "/nonexistent/devfsd"}, "not an executable file"},
		{[]string{"-devfsd-old", devfsd, "-backends", "barefs"}, "needs devfsd among -backends"},
	} {
		out, err := exec.Command(bin, append([]string{"-quick", "-miss=false"}, tc.args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("fusebench %q: %v, output %q; want a failure saying %q", tc.args, err, out, tc.want)
		}
	}
	// The old binary is a wrapper that notes each start, so that the test
	// sees devfsd-old mounted by it and by nothing else.
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	old := filepath.Join(dir, "devfsd-old")
	script := "#!/bin/sh\necho \"$@\" >> " + starts + "\nexec " + devfsd + " \"$@\"\n"
	if err := os.WriteFile(old, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-quick", "-miss=false", "-backends", "barefs,devfsd", "-threads", "1",
		"-cases", "stat hit, timeouts 1s, cold;ls -l", "-devfsd-old", old)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("fusebench -devfsd-old: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), out)
	}
	report := string(out)
	for _, want := range []string{
		"| stat hit, timeouts 1s, cold, 1 thread | devfsd-old |",
		"| ls -l 300, 1 thread | devfsd-old/rdp-on |",
		"devfsd (this tree) against devfsd-old (" + old + ")",
		"| stat hit, timeouts 1s, cold, 1 thread | devfsd | ",
		"| ls -l 300, 1 thread | devfsd/rdp-off | ",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	// One probe, then one mount per devfsd-old variant of each case:
	// stat (devfsd-old) and ls -l (devfsd-old, /rdp-off, /rdp-on).
	b, err := os.ReadFile(starts)
	if err != nil {
		t.Fatalf("the -devfsd-old binary never ran: %v", err)
	}
	if n := strings.Count(string(b), "\n"); n != 5 {
		t.Errorf("the -devfsd-old binary ran %d times, want 5 (a probe and 4 mounts):\n%s", n, b)
	}
	harness.CheckNoMounts(t)
}
