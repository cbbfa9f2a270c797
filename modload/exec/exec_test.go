package exec

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/test/harness"
)

// deadline bounds every wait on a condition in these tests.
const deadline = 20 * time.Second

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// gone reports whether pid no longer runs (absent, or a zombie).
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	harness.Until(t, deadline, what, cond)
}

// collect gathers output lines.
type collect struct {
	mu    sync.Mutex
	lines []string
}

func (c *collect) add(l string) { c.mu.Lock(); c.lines = append(c.lines, l); c.mu.Unlock() }
func (c *collect) all() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.lines...)
}

func TestRunKillsTheProcessGroupAtTheDeadline(t *testing.T) {
	// The program starts a grandchild in its group, says both pids, and
	// hangs; the deadline must take both.
	prog := script(t, "sleep 1000 &\necho $$ $!\nwait\n")
	var out collect
	r := NewRunner(nil)
	start := time.Now()
	res, err := r.Run(context.Background(), Spec{Argv: []string{prog}, Timeout: 300 * time.Millisecond, Stdout: out.add})
	if !errors.Is(err, ErrTimeout) || !res.Killed {
		t.Fatalf("Run = %+v, %v; want killed with ErrTimeout", res, err)
	}
	// Unkilled, the program would run 1000 s; the bound leaves a loaded
	// machine room.
	if el := time.Since(start); el > deadline {
		t.Errorf("Run returned after %v", el)
	}
	lines := out.all()
	if len(lines) != 1 {
		t.Fatalf("output %q", lines)
	}
	for _, f := range strings.Fields(lines[0]) {
		pid, _ := strconv.Atoi(f)
		waitFor(t, "pid "+f+" to be gone", func() bool { return gone(pid) })
	}
	if got := r.Running(); len(got) != 0 {
		t.Errorf("Running = %v after the run", got)
	}
}

func TestRunContextEndKillsToo(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := NewRunner(nil)
	started := make(chan struct{})
	go func() {
		<-started
		cancel()
	}()
	// Timeout only bounds the test: were the context not honoured, the
	// deadline would kill the program and the error would say so.
	res, err := r.Run(ctx, Spec{Argv: []string{"/bin/sh", "-c", "echo up; exec sleep 1000"},
		Timeout: deadline, Stdout: func(string) { close(started) }})
	if !errors.Is(err, context.Canceled) || !res.Killed {
		t.Fatalf("Run = %+v, %v; want killed by the context", res, err)
	}
}

func TestRunExitStatus(t *testing.T) {
	r := NewRunner(nil)
	tests := []struct {
		cmd  string
		code int
		ok   bool
	}{{"exit 0", 0, true}, {"exit 3", 3, false}}
	for _, tt := range tests {
		res, err := r.Run(context.Background(), Spec{Argv: []string{"/bin/sh", "-c", tt.cmd}, Timeout: deadline})
		if (err == nil) != tt.ok || res.ExitCode != tt.code || res.Killed {
			t.Errorf("%s: %+v, %v", tt.cmd, res, err)
		}
	}
	if _, err := r.Run(context.Background(), Spec{Argv: []string{"/nonexistent/program"}}); err == nil {
		t.Error("a missing program ran")
	}
}

func TestRunEnvironmentAndDirectory(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "/run/systemd/notify")
	t.Setenv("LISTEN_FDS", "3")
	t.Setenv("DEVFSD_TEST_KEPT", "yes")
	var out collect
	r := NewRunner(nil)
	_, err := r.Run(context.Background(), Spec{
		Argv:    []string{"/bin/sh", "-c", `pwd; echo "notify=${NOTIFY_SOCKET-unset} listen=${LISTEN_FDS-unset} kept=$DEVFSD_TEST_KEPT extra=$EXTRA"; ps -o pgid= -p $$; echo $$`},
		Env:     []string{"EXTRA=1"},
		Timeout: deadline, Stdout: out.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	l := out.all()
	if len(l) != 4 {
		t.Fatalf("output %q", l)
	}
	if l[0] != "/" {
		t.Errorf("cwd %q, want /", l[0])
	}
	if l[1] != "notify=unset listen=unset kept=yes extra=1" {
		t.Errorf("environment: %q", l[1])
	}
	if strings.TrimSpace(l[2]) != l[3] {
		t.Errorf("process group %q, want its own (%s)", l[2], l[3])
	}
}

func TestRunInheritsNoRawDescriptor(t *testing.T) {
	// A descriptor opened without O_CLOEXEC, as go-fuse opens /dev/fuse
	// on a direct mount.
	f := filepath.Join(t.TempDir(), "raw-descriptor")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(f, syscall.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	var out collect
	r := NewRunner(nil)
	if _, err := r.Run(context.Background(), Spec{
		Argv:    []string{"/bin/sh", "-c", `ls -l /proc/$$/fd`},
		Timeout: deadline, Stdout: out.add,
	}); err != nil {
		t.Fatal(err)
	}
	for _, l := range out.all() {
		if strings.Contains(l, "raw-descriptor") {
			t.Errorf("the child inherited %s", l)
		}
		f := strings.Fields(l)
		if len(f) < 3 || f[len(f)-2] != "->" {
			continue // "total 0"
		}
		if n := f[len(f)-3]; n != "0" && n != "1" && n != "2" {
			t.Errorf("the child has descriptor %s", l)
		}
	}
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil || flags&unix.FD_CLOEXEC == 0 {
		t.Errorf("descriptor %d not close-on-exec after Run (flags %#x, %v)", fd, flags, err)
	}
}

func TestInGroupIsTheRunningProgramsGroup(t *testing.T) {
	r := NewRunner(nil)
	if r.InGroup(uint32(os.Getpid())) {
		t.Fatal("the test process is in a group before anything runs")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type check struct{ child, grandchild, self bool }
	got := make(chan check, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(ctx, Spec{
			Argv: []string{"/bin/sh", "-c", "sleep 1000 & echo $$ $!; wait"},
			Stdout: func(l string) {
				f := strings.Fields(l)
				a, _ := strconv.Atoi(f[0])
				b, _ := strconv.Atoi(f[1])
				got <- check{r.InGroup(uint32(a)), r.InGroup(uint32(b)), r.InGroup(uint32(os.Getpid()))}
				cancel()
			},
		})
	}()
	select {
	case c := <-got:
		if !c.child || !c.grandchild || c.self {
			t.Errorf("InGroup: program %v, its child %v, the test %v; want true, true, false", c.child, c.grandchild, c.self)
		}
	case <-time.After(deadline):
		t.Fatal("the program said nothing")
	}
	<-done
	if r.InGroup(uint32(os.Getpid())) || len(r.Running()) != 0 {
		t.Error("a group is left after the run")
	}
}

// fakeReg records registrations.
type fakeReg struct {
	mu    sync.Mutex
	nodes map[string]modload.Node
}

func (f *fakeReg) Register(n modload.Node) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.nodes[n.Path]; ok {
		return syscall.EEXIST
	}
	f.nodes[n.Path] = n
	return nil
}

func TestLoaderRegistersWhatTheProgramPrints(t *testing.T) {
	prog := script(t, `
[ "$ACTION" = lookup ] || exit 9
[ "$DEVNAME" = "$1" ] || exit 8
[ "$DEVPATH" = "$MNTPNT/$1" ] || exit 7
[ "$2" = "" ] || exit 6
echo "loading $1"
echo "register dir snd 0755"
echo "register char $1 14 3 0660 0 29"
echo "register char $1 14 3"
echo "register symlink sound/dsp ../$1"
`)
	reg := &fakeReg{nodes: map[string]modload.Node{}}
	l, err := New(Options{Program: prog, Mountpoint: "/mnt/dev", Registrar: reg, Timeout: deadline})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Load(context.Background(), "", "dsp", dcache.Caller{}); err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := map[string]string{
		"snd":       "dir 0755 0:0 snd",
		"dsp":       "char 14:3 0660 0:29 dsp",
		"sound/dsp": "symlink sound/dsp -> ../dsp",
	}
	if len(reg.nodes) != len(want) {
		t.Errorf("registered %v", reg.nodes)
	}
	for p, w := range want {
		if got := reg.nodes[p].String(); got != w {
			t.Errorf("%s: %q, want %q", p, got, w)
		}
	}
}

func TestLoaderExitIsDone(t *testing.T) {
	reg := &fakeReg{nodes: map[string]modload.Node{}}
	fail, _ := New(Options{Program: script(t, "exit 1\n"), Registrar: reg, Timeout: deadline})
	if err := fail.Load(context.Background(), "", "x", dcache.Caller{}); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("exit 1: %v, want ENOENT", err)
	}
	hang, _ := New(Options{Program: script(t, "exec sleep 1000\n"), Registrar: reg, Timeout: 200 * time.Millisecond})
	start := time.Now()
	if err := hang.Load(context.Background(), "net", "tun", dcache.Caller{}); !errors.Is(err, ErrTimeout) {
		t.Errorf("hang: %v, want ErrTimeout", err)
	}
	if el := time.Since(start); el > deadline { // unkilled: 1000 s
		t.Errorf("a hanging program held the load %v", el)
	}
	if err := hang.Load(context.Background(), "", "../x", dcache.Caller{}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("a bad name: %v", err)
	}
	if _, err := New(Options{Program: "modprobe", Registrar: reg}); err == nil {
		t.Error("a relative program was accepted")
	}
}

func TestParseRegisterLine(t *testing.T) {
	tests := []struct {
		line string
		ok   bool
		want string // Node.String, or "" for an error
	}{
		{"loading dsp", false, ""},
		{"", false, ""},
		{"register char dsp 14 3", true, "char 14:3 0600 0:0 dsp"},
		{"register block /loop0 7 0 0660 0 6", true, "block 7:0 0660 0:6 loop0"},
		{"register dir input", true, "dir 0755 0:0 input"},
		{"register dir input 0750 0 5", true, "dir 0750 0:5 input"},
		{"register symlink cdrom sr0", true, "symlink cdrom -> sr0"},
		{"register char dsp 14", true, ""},
		{"register char dsp 4096 0", true, ""},
		{"register char dsp 14 3 0999", true, ""},
		{"register char dsp 14 3 010000", true, ""},
		{"register char dsp 14 3 0660 -1", true, ""},
		{"register char ../dsp 14 3", true, ""},
		{"register fifo p", true, ""},
		{"register symlink a", true, ""},
		{"register", true, ""},
	}
	for _, tt := range tests {
		n, ok, err := ParseRegisterLine(tt.line)
		if ok != tt.ok {
			t.Errorf("%q: ok %v", tt.line, ok)
			continue
		}
		if !ok {
			continue
		}
		if tt.want == "" {
			if err == nil {
				t.Errorf("%q: accepted as %v", tt.line, n)
			}
			continue
		}
		if err != nil || n.String() != tt.want {
			t.Errorf("%q: %v, %v; want %s", tt.line, n, err, tt.want)
		}
	}
}
