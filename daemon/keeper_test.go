package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/test/harness"
)

// The keeper's unit tests run this test binary three ways: as the test,
// as the keeper's exec step (keeper-exec), and as a stand-in daemon that
// speaks the descriptor store protocol through fdstore.go, the daemon's
// own code (keeperChildEnv selects it).
const keeperChildEnv = "DEVFSD_KEEPER_TEST_CHILD"

// keeperStuckEnv selects the stand-in of a daemon that dies stuck.
const keeperStuckEnv = "DEVFSD_KEEPER_TEST_STUCK"

// stuckChild is a daemon killed while a thread of it is stuck in the
// kernel: run 1 says READY=1, writes its pid to dir/run1, and ends its
// main thread alone (the thread group lives on, as a process whose
// other thread waits uninterruptibly does). Run 2 writes dir/run2 and
// exits 0.
func stuckChild(dir string) int {
	st, err := newFDStore()
	if err != nil {
		return 1
	}
	if _, err := os.Stat(filepath.Join(dir, "run1")); err == nil {
		os.WriteFile(filepath.Join(dir, "run2"), []byte("ok"), 0o644)
		st.send("READY=1\n", nil)
		return 0
	}
	st.send("READY=1\n", nil)
	os.WriteFile(filepath.Join(dir, "run1"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	go func() {
		for {
			time.Sleep(time.Hour) // the thread group's life
		}
	}()
	runtime.LockOSThread()                  // the main goroutine runs on the main thread, from init on
	unix.RawSyscall(unix.SYS_EXIT, 0, 0, 0) // that thread alone
	return 1
}

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "keeper-exec" {
		err := ExecListening(os.Args[3:])
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	if dir := os.Getenv(keeperUpChildEnv); dir != "" {
		os.Exit(upChild(dir))
	}
	if dir := os.Getenv(keeperUpEnv); dir != "" {
		os.Exit(upKeeper(dir))
	}
	if dir := os.Getenv(keeperChildEnv); dir != "" {
		os.Exit(keeperChild(dir))
	}
	if dir := os.Getenv(keeperStuckEnv); dir != "" {
		os.Exit(stuckChild(dir))
	}
	os.Exit(m.Run())
}

// keeperChild is the stand-in daemon. Run 1 (no descriptors inherited)
// stores a memfd holding "kept-1" under "devfsd-test", and a second
// descriptor it removes again, says READY=1 and waits to be killed. Run 2
// finds the memfd through LISTEN_FDS, reports what it holds in dir/run2,
// and exits 0: a clean stop, which ends the keeper.
func keeperChild(dir string) int {
	in := takeInherited()
	st, err := newFDStore()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if f := in.take("devfsd-test"); f != nil {
		b := make([]byte, 64)
		n, _ := f.ReadAt(b, 0)
		report := fmt.Sprintf("content=%s pid=%d rest=%v", b[:n], os.Getpid(), in.rest())
		os.WriteFile(filepath.Join(dir, "run2"), []byte(report), 0o644)
		st.send("READY=1\n", nil)
		return 0
	}
	fd, err := unix.MemfdCreate("t", unix.MFD_CLOEXEC)
	if err != nil {
		return 1
	}
	unix.Write(fd, []byte("kept-1"))
	other, _ := unix.MemfdCreate("gone", unix.MFD_CLOEXEC)
	for _, e := range []error{
		st.Store("devfsd-test", fd),
		st.Store("devfsd-test", fd), // the same file again: kept once
		st.Store("devfsd-gone", other),
		st.Remove("devfsd-gone"),
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

// A daemon killed after storing descriptors is started again with them,
// by name (takeInherited checks that LISTEN_PID is its own pid, the
// pid the keeper started); what it removed is not given
// back, a descriptor stored twice comes once; its clean exit ends the
// keeper.
func TestKeeperRestartsWithStoredDescriptors(t *testing.T) {
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(keeperChildEnv, dir)
	pidFile := filepath.Join(dir, "pid")
	done := make(chan error, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	go func() {
		done <- RunKeeper(ctx, KeeperOptions{Argv: []string{self}, Dir: dir, Self: self, PidFile: pidFile,
			RestartDelay: time.Millisecond})
	}()
	harness.Until(t, 30*time.Second, "the first run is ready", func() bool {
		_, err := os.Stat(filepath.Join(dir, "run1"))
		return err == nil
	})
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("keeper: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the keeper did not end after the second run's clean exit")
	}
	got, err := os.ReadFile(filepath.Join(dir, "run2"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(pidFile)
	want := fmt.Sprintf("content=kept-1 pid=%s rest=[]", strings.TrimSpace(string(b)))
	if !bytes.Equal(got, []byte(want)) {
		t.Fatalf("second run saw %q, want %q", got, want)
	}
}

// A daemon whose main thread died while another thread of it is stuck
// in the kernel (after SIGKILL, a notify waiting for a directory lock
// that a call waiting for the daemon holds) is not waited for: the keeper
// starts the next daemon, which is what frees the stuck thread.
func TestKeeperStartsAgainPastAStuckThread(t *testing.T) {
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(keeperStuckEnv, dir)
	t.Cleanup(func() {
		if b, err := os.ReadFile(filepath.Join(dir, "run1")); err == nil {
			if pid, _ := strconv.Atoi(string(b)); pid > 0 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = RunKeeper(ctx, KeeperOptions{Argv: []string{self}, Dir: dir, Self: self, RestartDelay: time.Millisecond})
	if err != nil {
		t.Fatalf("keeper: %v (the next daemon was not started while the stuck one lived on)", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "run2")); err != nil {
		t.Fatalf("the second run did not happen: %v", err)
	}
}

// A daemon that fails before READY=1 is not started forever.
func TestKeeperStartLimit(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	self, _ := os.Executable()
	err := RunKeeper(ctx, KeeperOptions{Argv: []string{"/bin/false"}, Dir: t.TempDir(), Self: self,
		RestartDelay: time.Millisecond, StartLimit: 3})
	if err == nil || !strings.Contains(err.Error(), "3 times in a row") {
		t.Fatalf("keeper: %v, want it to give up after 3 failed starts", err)
	}
}

func TestCheckFDName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"devfsd-fuse-0", true}, {"", false}, {"a:b", false}, {"a\nb", false},
		{strings.Repeat("x", 255), true}, {strings.Repeat("x", 256), false}, {"é", false},
	} {
		if err := checkFDName(c.name); (err == nil) != c.ok {
			t.Errorf("checkFDName(%q) = %v, want ok %v", c.name, err, c.ok)
		}
	}
}
