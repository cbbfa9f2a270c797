package integration

// The loaders at the edges: a helper that dies with a lookup pending, and
// programs (exec loader, EXECUTE) whose parent is killed.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A lookup pending when its helper is killed goes to the fallback loader
// (the built-in catalogue) at once: the name it provides is answered with
// its node, promptly (long before the loader timeout), and nothing is
// cached negatively for it (the negative timeout is long; a second stat
// sees the node too, as does a stat of the module's other nodes).
func TestHelperKilledPendingLookupFallsBack(t *testing.T) {
	d := startCtl(t, "--loader-timeout=60s", "--negative-timeout=60s")
	h := startHelper(t, d, "--hang")
	type result struct {
		fi  os.FileInfo
		err error
		at  time.Time
	}
	res := make(chan result, 1)
	go func() {
		fi, err := os.Stat(d.path("loop3"))
		res <- result{fi, err, time.Now()}
	}()
	h.waitLine("the pending lookup of loop3", func(l string) bool {
		return strings.HasPrefix(l, "lookup ") && strings.Contains(l, "loop3")
	})
	killed := time.Now()
	h.kill()
	var r result
	select {
	case r = <-res:
	case <-time.After(condDeadline):
		t.Fatalf("the pending stat of loop3 was not answered within %v of the helper's death", condDeadline)
	}
	if r.err != nil {
		t.Fatalf("the pending stat of loop3 after the helper died: %v, want the built-in node", r.err)
	}
	if r.fi.Mode()&os.ModeDevice == 0 || r.fi.Mode()&os.ModeCharDevice != 0 {
		t.Fatalf("loop3: mode %v, want a block device", r.fi.Mode())
	}
	// Well before the 60s loader timeout: the fallback was asked at once,
	// not after the deadline.
	if late := r.at.Sub(killed); late > condDeadline/2 {
		t.Errorf("answered %v after the kill", late)
	}
	for _, name := range []string{"loop3", "loop4"} {
		if _, err := os.Stat(d.path(name)); err != nil {
			t.Errorf("stat %s again: %v", name, err)
		}
	}
	s, err := d.c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Helper.Aborted != 1 {
		t.Errorf("helper stats %+v, want 1 aborted", s.Helper)
	}
}

// statInBackground stats p on a goroutine of its own and returns a channel
// that gets the result.
func statInBackground(p string) <-chan error {
	res := make(chan error, 1)
	go func() {
		_, err := os.Stat(p)
		res <- err
	}()
	return res
}

// hangScript is a program that starts `sleep 30` in its process group,
// writes its own pid and the sleep's to pids, and waits.
func hangScript(t *testing.T, pids string) string {
	t.Helper()
	killPidsFrom(t, pids)
	return writeScript(t, "sleep 30 &\necho $$ $! > "+pids+".tmp\nmv "+pids+".tmp "+pids+"\nwait\n")
}

// The exec loader's program, and what it started in its process group,
// die with the daemon: SIGKILL of the daemon while a lookup's program
// hangs (its own deadline far away) leaves neither running.
func TestExecLoaderProgramDiesWithTheDaemon(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	prog := hangScript(t, pids)
	d := startCtl(t, "--loader=exec", "--exec-program="+prog, "--exec-timeout=60s", "--loader-timeout=60s")
	res := statInBackground(d.path("hang"))
	readPidFile(t, pids, 2)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.exited
	waitPidsGone(t, pids, 2)
	select {
	case <-res: // ENOTCONN: the daemon is gone
	case <-time.After(condDeadline):
		t.Fatalf("the stat waiting on the killed daemon did not return within %v", condDeadline)
	}
}

// An EXECUTE program of `devfsd helper`, and what it started in its
// process group, die with the helper: SIGKILL of the helper while the
// program runs (its deadline far away) leaves neither running.
func TestConfExecuteDiesWithTheHelper(t *testing.T) {
	pids := filepath.Join(t.TempDir(), "pids")
	prog := hangScript(t, pids)
	d := startCtl(t, "--loader=none", "--negative-timeout=0s", "--loader-timeout=60s")
	h := startConfHelper(t, d, "LOOKUP ^hang$ EXECUTE "+prog+"\n", "--exec-timeout=60s")
	res := statInBackground(d.path("hang"))
	readPidFile(t, pids, 2)
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-h.exited
	waitPidsGone(t, pids, 2)
	select {
	case err := <-res:
		if !errors.Is(err, syscall.ENOENT) {
			t.Errorf("the stat pending when the helper died: %v, want ENOENT (no fallback)", err)
		}
	case <-time.After(condDeadline):
		t.Fatalf("the stat pending when the helper died did not return within %v", condDeadline)
	}
}

// readPidFile waits until file holds n pids.
func readPidFile(t *testing.T, file string, n int) {
	t.Helper()
	until(t, fmt.Sprintf("%d pids in %s", n, file), func() bool {
		b, _ := os.ReadFile(file)
		return len(strings.Fields(string(b))) >= n
	})
}
