package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/devfsd/devfsd/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// TestQuickRun builds probe and runs it once in -quick mode, with the
// every-opcode count and a short profile: a smoke test that every item runs
// and reports its rows. It checks no figure (timings under test load mean
// nothing) but what must hold on any machine: each exec miss was answered
// with its node (the program checks every probe's answer and each
// registration's visibility itself, and fails on a wrong one).
func TestQuickRun(t *testing.T) {
	bin, err := harness.Build("github.com/devfsd/devfsd/test/bench/probe")
	if err != nil {
		t.Fatal(err)
	}
	prof := t.TempDir() + "/cpu.pprof"
	cmd := exec.Command(bin, "-quick", "-items", "1,2,3,4,5", "-opcount", "3", "-pprof", prof, "-pprof-seconds", "1", "-pprof-threads", "2")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("probe -quick: %v\nstderr:\n%s\nstdout:\n%s", err, stderr.String(), out)
	}
	report := string(out)
	for _, want := range []string{
		"| 1 | tmpfs | ",
		"| 8 | devfsd | ",
		"| 8 | devfsd+helper | ",
		"| devfsd+helper / devfsd | 1 | ",
		"| `devfsd ctl register` (through the socket) | 1 | 1 | ",
		"| prints `register char NAME 1 3` (reference) | 1 | 1 | ",
		"| devfsd | fresh name | 10 | ",
		"| devfsd | name whose miss was just cached (an lstat saw ENOENT first) | 10 | ",
		"- devfsd: ",
		"- devfsd+helper: ",
		"profile in " + prof,
		"| raw | 10 | ", "| loop | 10 | ", "| net/http | 10 | ", "| devfsd | 10 | ",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(stderr.String(), "probe: item 3: lstat") {
		t.Errorf("an exec miss was not answered with the node:\n%s", stderr.String())
	}
}
