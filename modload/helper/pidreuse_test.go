package helper

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pidnsChild marks the run of TestPidReuseCannotMakeAStrangerTheHelper
// inside its own pid namespace.
const pidnsChild = "DEVFSD_HELPER_TEST_PIDNS_CHILD"

// TestPidReuseCannotMakeAStrangerTheHelper: a helper exits and is reaped,
// and a stranger is given its very pid (forced through ns_last_pid, in a
// pid namespace of the test's own, so that nothing else takes pids
// meanwhile). Neither walk — through pidfds, nor through /proc — takes
// the stranger for the helper, although it carries the pid the session
// was attached with; a live helper is still recognised.
func TestPidReuseCannotMakeAStrangerTheHelper(t *testing.T) {
	if os.Getenv(pidnsChild) == "1" {
		pidReuseInNamespace(t)
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: a pid namespace and ns_last_pid")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPidReuseCannotMakeAStrangerTheHelper$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), pidnsChild+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
		Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestPidReuseCannotMakeAStrangerTheHelper") {
		t.Fatalf("in its own pid namespace: %v\n%s", err, out)
	}
	t.Logf("in its own pid namespace:\n%s", out)
}

// pidReuseInNamespace is the test proper, run as pid 1 of a new pid
// namespace with a mount namespace of its own (for a /proc of that pid
// namespace).
func pidReuseInNamespace(t *testing.T) {
	if os.Getpid() != 1 {
		t.Fatalf("not pid 1 of a new pid namespace (pid %d)", os.Getpid())
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		t.Fatalf("make mounts private: %v", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		t.Fatalf("mount proc: %v", err)
	}
	start := func() *exec.Cmd {
		t.Helper()
		c := exec.Command("sleep", "600")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	h := start()
	hpid := uint32(h.Process.Pid)
	hfd, err := unix.PidfdOpen(int(hpid), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(hfd)
	hstart, err := startTime(hpid)
	if err != nil {
		t.Fatal(err)
	}
	// While it lives, the helper is itself, and this process is not it.
	if ok, err := pidfdDescends(hpid, hpid, hfd); err != nil || !ok {
		t.Fatalf("pidfd walk: the live helper is not itself (%v, %v)", ok, err)
	}
	if !isDescendant(hpid, hpid, hstart, hfd) {
		t.Fatal("/proc walk: the live helper is not itself")
	}
	if ok, _ := pidfdDescends(uint32(unix.Gettid()), hpid, hfd); ok {
		t.Fatal("pidfd walk: the helper's parent taken for the helper")
	}
	// The helper exits and is reaped; its pid is free.
	h.Process.Kill()
	h.Wait()
	// A stranger gets its pid: ns_last_pid makes the next pid hpid, unless
	// a thread of this process takes it first; try again then.
	var s *exec.Cmd
	for try := 0; try < 100 && s == nil; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(int(hpid)-1)), 0); err != nil {
			t.Fatalf("ns_last_pid: %v", err)
		}
		c := start()
		if uint32(c.Process.Pid) == hpid {
			s = c
		} else {
			c.Process.Kill()
			c.Wait()
		}
	}
	if s == nil {
		t.Fatalf("no stranger got pid %d in 100 tries", hpid)
	}
	if ok, err := pidfdDescends(hpid, hpid, hfd); err != nil || ok {
		t.Errorf("pidfd walk: a stranger with the reaped helper's pid %d taken for the helper (%v, %v)", hpid, ok, err)
	}
	if isDescendant(hpid, hpid, hstart, hfd) {
		t.Errorf("/proc walk: a stranger with the reaped helper's pid %d taken for the helper", hpid)
	}
	if isDescendant(hpid, hpid, hstart, -1) {
		t.Logf("the start time alone (no pidfd) would have taken the stranger for the helper: same clock tick")
	}
	if descends(hpid, hpid, hfd, hstart) {
		t.Errorf("descends: a stranger with the reaped helper's pid %d taken for the helper", hpid)
	}
}
