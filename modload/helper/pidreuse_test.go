package helper

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
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
	keptVerdictsInNamespace(t, start)
}

// nsHelper is a helper process for keptVerdictsInNamespace: a shell that
// forks on request, so that the test chooses (through ns_last_pid) the
// pids of the helper's children, and reaps them on request.
type nsHelper struct {
	cmd *exec.Cmd
	in  io.Writer
	out *bufio.Reader
}

const nsHelperScript = `while read c a; do
case $c in
spawn) sleep 600 & echo "d $!";;
chain) sh -c 'sleep 600 & echo "d $!"; wait' & echo "m $!";;
reap) kill -9 $a; wait $a; echo "r $a";;
esac
done`

func startNSHelper(t *testing.T) *nsHelper {
	t.Helper()
	c := exec.Command("sh", "-c", nsHelperScript)
	in, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close(); c.Process.Kill(); c.Wait() })
	return &nsHelper{cmd: c, in: in, out: bufio.NewReader(out)}
}

// ask sends one command and returns the pids of the answer's lines, by
// their tag ("d": a child's, "m": the middle shell's, "r": reaped).
func (h *nsHelper) ask(t *testing.T, cmd string, lines int) map[string]uint32 {
	t.Helper()
	if _, err := io.WriteString(h.in, cmd+"\n"); err != nil {
		t.Fatal(err)
	}
	got := map[string]uint32{}
	for i := 0; i < lines; i++ {
		l, err := h.out.ReadString('\n')
		if err != nil {
			t.Fatalf("helper shell, after %q: %v", cmd, err)
		}
		tag, num, _ := strings.Cut(strings.TrimSpace(l), " ")
		v, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			t.Fatalf("helper shell said %q", l)
		}
		got[tag] = uint32(v)
	}
	return got
}

// withPid runs spawn (which starts one process and returns its pid and a
// way to end it) until the process it starts gets pid want, through
// ns_last_pid; a try that got another pid is ended and tried again.
func withPid(t *testing.T, want uint32, spawn func() (uint32, func())) {
	t.Helper()
	for try := 0; try < 100; try++ {
		if err := os.WriteFile("/proc/sys/kernel/ns_last_pid", []byte(strconv.Itoa(int(want)-1)), 0); err != nil {
			t.Fatalf("ns_last_pid: %v", err)
		}
		got, end := spawn()
		if got == want {
			return
		}
		end()
	}
	t.Fatalf("no process got pid %d in 100 tries", want)
}

// kept returns the verdict s keeps for tid, or nil.
func kept(s *Session, tid uint32) *verdict {
	if v := s.kept.slots[slotOf(tid)].Load(); v != nil && v.tid == tid {
		return v
	}
	return nil
}

// keptVerdictsInNamespace: the verdicts a session keeps (verdicts.go)
// across pid reuse and a changed parent chain, with the helper a shell
// whose children's pids the test chooses. A kept yes whose process died
// is not given to the stranger that got its pid; a kept no whose process
// died is not given to the helper's child that got its pid; a kept yes
// whose chain lost a link (the middle process exited, its child went to
// init) is a no at once; a verdict is dropped, its pidfds closed, when
// its process is gone.
func keptVerdictsInNamespace(t *testing.T, start func() *exec.Cmd) {
	h := startNSHelper(t)
	l := New(nil)
	s, err := l.Attach(dcache.Caller{Pid: uint32(h.cmd.Process.Pid)}, nopConn{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Detach("test over")

	// A kept yes; its process dies and a stranger gets its pid.
	d := h.ask(t, "spawn", 1)["d"]
	if !l.IsHelper(d) || !l.IsHelper(d) {
		t.Fatalf("the helper's child %d is not the helper's", d)
	}
	v := kept(s, d)
	if v == nil || !v.yes || v.n != 2 {
		t.Fatalf("no yes kept for the helper's child %d (a chain of 2): %+v", d, v)
	}
	h.ask(t, "reap "+strconv.Itoa(int(d)), 1)
	withPid(t, d, func() (uint32, func()) {
		c := start()
		return uint32(c.Process.Pid), func() { c.Process.Kill(); c.Wait() }
	})
	if l.IsHelper(d) {
		t.Errorf("cached: a stranger with the dead helper child's pid %d taken for the helper", d)
	}
	if v.refs.Load() != 0 {
		t.Errorf("the dead child's verdict is still referenced (%d): its pidfds are open", v.refs.Load())
	}
	if nv := kept(s, d); nv == nil || nv.yes || nv == v {
		t.Errorf("the stranger %d has no no of its own kept: %+v", d, nv)
	}

	// A kept no; its process dies and a child of the helper gets its pid.
	st := start()
	sp := uint32(st.Process.Pid)
	if l.IsHelper(sp) || l.IsHelper(sp) {
		t.Fatalf("the stranger %d taken for the helper", sp)
	}
	if v := kept(s, sp); v == nil || v.yes {
		t.Fatalf("no no kept for the stranger %d: %+v", sp, v)
	}
	st.Process.Kill()
	st.Wait()
	withPid(t, sp, func() (uint32, func()) {
		p := h.ask(t, "spawn", 1)["d"]
		return p, func() { h.ask(t, "reap "+strconv.Itoa(int(p)), 1) }
	})
	if !l.IsHelper(sp) {
		t.Errorf("cached: the helper's child with a dead stranger's pid %d not taken for the helper", sp)
	}

	// A kept yes three links long; the middle one exits, and its child
	// goes to init (this process): no longer the helper's.
	ids := h.ask(t, "chain", 2)
	m, d3 := ids["m"], ids["d"]
	t.Cleanup(func() { unix.Kill(int(d3), unix.SIGKILL); var ws unix.WaitStatus; unix.Wait4(int(d3), &ws, 0, nil) })
	if !l.IsHelper(d3) || !l.IsHelper(d3) {
		t.Fatalf("the helper's grandchild %d is not the helper's", d3)
	}
	if v := kept(s, d3); v == nil || !v.yes || v.n != 3 {
		t.Fatalf("no yes kept for the helper's grandchild %d (a chain of 3): %+v", d3, v)
	}
	mfd, err := unix.PidfdOpen(int(m), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(mfd)
	if err := unix.Kill(int(m), unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	pfd := []unix.PollFd{{Fd: int32(mfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, 60_000) // the exit: bounded by the outer test's deadline too
		if err == unix.EINTR {
			continue
		}
		if err != nil || n != 1 {
			t.Fatalf("the middle shell %d did not exit: %d, %v", m, n, err)
		}
		break
	}
	// m is a zombie (the helper shell has not reaped it): its pid is not
	// free, but its child has been reparented.
	if l.IsHelper(d3) {
		t.Errorf("cached: the helper's grandchild %d still the helper's after its parent %d exited", d3, m)
	}
	h.ask(t, "reap "+strconv.Itoa(int(m)), 1)
}
