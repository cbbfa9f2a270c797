package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// keeperUpEnv makes the test binary a keeper run under a stand-in for
// systemd (its NOTIFY_SOCKET and LISTEN_FDS); keeperUpChildEnv the
// daemon that keeper runs.
const (
	keeperUpEnv      = "DEVFSD_KEEPER_TEST_UP"
	keeperUpChildEnv = "DEVFSD_KEEPER_TEST_UPCHILD"
)

// upKeeper is the keeper under the stand-in systemd.
func upKeeper(dir string) int {
	os.Unsetenv(keeperUpEnv)
	os.Setenv(keeperUpChildEnv, dir)
	self, _ := os.Executable()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := RunKeeper(ctx, KeeperOptions{Argv: []string{self}, Dir: dir, Self: self,
		PidFile: filepath.Join(dir, "pid"), RestartDelay: time.Millisecond, Subreaper: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// upChild is the daemon. Run 1 reports the content of what it inherited
// as "devfsd-sd" (systemd's store, given to the keeper at its start) in
// dir/seen1, stores a memfd holding "kept-up" under "devfsd-up" and an
// O_PATH descriptor under "devfsd-opath", takes "devfsd-sd" out of the
// store, says READY=1 and waits to be killed. Run 2 reports the names it
// inherited in dir/run2, says READY=1, and exits 0 at SIGTERM.
func upChild(dir string) int {
	in := takeInherited()
	st, err := newFDStore()
	if err != nil {
		return 1
	}
	if _, err := os.Stat(filepath.Join(dir, "run1")); err == nil {
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		names := in.rest()
		sort.Strings(names)
		writeAtomicFile(filepath.Join(dir, "run2"), []byte(strings.Join(names, ","))) // whole once it is there
		st.send("READY=1\n", nil)
		<-term
		st.Remove("devfsd-up")
		return 0
	}
	if f := in.take("devfsd-sd"); f != nil {
		b := make([]byte, 64)
		n, _ := f.ReadAt(b, 0)
		writeAtomicFile(filepath.Join(dir, "seen1"), b[:n])
	}
	fd, err := unix.MemfdCreate("t", unix.MFD_CLOEXEC)
	if err != nil {
		return 1
	}
	unix.Write(fd, []byte("kept-up"))
	opath, err := unix.Open("/", unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return 1
	}
	for _, e := range []error{
		st.Store("devfsd-up", fd),
		st.Store("devfsd-opath", opath),
		st.Remove("devfsd-sd"),
		st.send("READY=1\n", nil),
	} {
		if e != nil {
			fmt.Fprintln(os.Stderr, e)
			return 1
		}
	}
	os.WriteFile(filepath.Join(dir, "run1"), []byte("ready"), 0o644)
	for {
		time.Sleep(time.Hour) // until killed
	}
}

// upMsg is one message the stand-in systemd got.
type upMsg struct {
	pid     int
	text    string
	content []string // of each memfd attached; "O_PATH" for such a descriptor
}

// Under systemd the keeper is the unit's main process and its store
// systemd's: the descriptors systemd gives it at start (LISTEN_FDS) go to
// its first daemon; every descriptor the daemon stores goes on to
// systemd's store (an O_PATH one with FDPOLL=0: systemd cannot poll it),
// every removal too;
// the daemon's READY=1 goes on once; a daemon restarted after a kill
// says nothing to systemd; SIGTERM to the keeper reaches the daemon, and
// the keeper says STOPPING=1. Every message comes from the keeper's pid
// (NotifyAccess=main).
func TestKeeperPassesItsStoreToSystemd(t *testing.T) {
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "systemd.sock"), Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	if err := setPassCred(up); err != nil {
		t.Fatal(err)
	}
	msgs := make(chan upMsg, 64)
	go func() {
		buf := make([]byte, 4096)
		oob := make([]byte, 1024)
		for {
			n, oobn, _, _, err := up.ReadMsgUnix(buf, oob)
			if err != nil {
				close(msgs)
				return
			}
			fds, cred := parseOOB(oob[:oobn])
			m := upMsg{text: string(buf[:n])}
			if cred != nil {
				m.pid = int(cred.Pid)
			}
			for _, fd := range fds {
				if isOPath(fd) {
					m.content = append(m.content, "O_PATH")
				} else {
					b := make([]byte, 64)
					k, _ := unix.Pread(fd, b, 0)
					m.content = append(m.content, string(b[:max(k, 0)]))
				}
				unix.Close(fd)
			}
			msgs <- m
		}
	}()
	sd, err := unix.MemfdCreate("sd", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	unix.Write(sd, []byte("from-systemd"))
	sdf := os.NewFile(uintptr(sd), "sd")
	defer sdf.Close()

	cmd := exec.Command(self, "keeper-exec", "--", self)
	cmd.Env = append(withoutEnv(os.Environ(), keeperChildEnv, keeperStuckEnv),
		keeperUpEnv+"="+dir, "NOTIFY_SOCKET="+filepath.Join(dir, "systemd.sock"),
		"LISTEN_FDS=1", "LISTEN_FDNAMES=devfsd-sd")
	cmd.ExtraFiles = []*os.File{sdf}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{}) // closed once the keeper is reaped, with waitErr set
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		for _, f := range []string{"pid"} {
			if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
				if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	})
	keeperPid := cmd.Process.Pid
	var got []upMsg
	next := func(what string) upMsg {
		t.Helper()
		select {
		case m := <-msgs:
			if m.pid != keeperPid {
				t.Errorf("%q came from pid %d, not the keeper's %d", m.text, m.pid, keeperPid)
			}
			got = append(got, m)
			return m
		case <-exited:
			t.Fatalf("the keeper exited (%v) before %s; systemd got %+v", waitErr, what, got)
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s within 30s; systemd got %+v", what, got)
		}
		return upMsg{}
	}
	// Run 1: its store and removal, then READY=1, in its order.
	for _, want := range []upMsg{
		{text: "FDSTORE=1\nFDNAME=devfsd-up\n", content: []string{"kept-up"}},
		{text: "FDSTORE=1\nFDNAME=devfsd-opath\nFDPOLL=0\n", content: []string{"O_PATH"}},
		{text: "FDSTOREREMOVE=1\nFDNAME=devfsd-sd\n"},
		{text: "READY=1\n"},
	} {
		m := next(fmt.Sprintf("%q", want.text))
		if m.text != want.text || !slices.Equal(m.content, want.content) {
			t.Fatalf("systemd got %q with %q, want %q with %q (all: %+v)", m.text, m.content, want.text, want.content, got)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "seen1")); err != nil || string(b) != "from-systemd" {
		t.Fatalf("the first daemon saw %q (%v) as devfsd-sd, want systemd's memfd", b, err)
	}
	harness.Until(t, 30*time.Second, "the first run is ready", func() bool {
		_, err := os.Stat(filepath.Join(dir, "run1"))
		return err == nil
	})
	b, _ := os.ReadFile(filepath.Join(dir, "pid"))
	pid1, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := syscall.Kill(pid1, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	harness.Until(t, 30*time.Second, "the second run is ready", func() bool {
		_, err := os.Stat(filepath.Join(dir, "run2"))
		return err == nil
	})
	if b, _ := os.ReadFile(filepath.Join(dir, "run2")); string(b) != "devfsd-opath,devfsd-up" {
		t.Errorf("the second daemon inherited %q, want devfsd-opath,devfsd-up", b)
	}
	// Its READY=1 is not passed on again. SIGTERM: STOPPING=1 first,
	// then the daemon's clean stop (it removes devfsd-up) ends the keeper.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"STOPPING=1\n", "FDSTOREREMOVE=1\nFDNAME=devfsd-up\n"} {
		if m := next(fmt.Sprintf("%q", want)); m.text != want {
			t.Fatalf("systemd got %q, want %q (all: %+v)", m.text, want, got)
		}
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("the keeper ended with %v, want a clean exit", waitErr)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the keeper did not end after the daemon's clean stop")
	}
	select {
	case m, ok := <-msgs:
		if ok {
			t.Errorf("systemd also got %q", m.text)
		}
	default:
	}
}
