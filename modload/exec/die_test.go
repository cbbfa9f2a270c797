package exec

import (
	"context"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/devfsd/devfsd/test/harness"
)

// parentEnv makes this test binary the parent of TestRunProgramsDieWithTheirParent:
// "MODE:DIR" runs a program through a Runner that writes its pid and its
// child's to DIR/pids, then prints the keeper's pid to standard output
// and, for MODE "exit", exits at once, for MODE "hang", waits to be
// killed.
const parentEnv = "DEVFSD_EXEC_TEST_PARENT"

func TestMain(m *testing.M) {
	if v := os.Getenv(parentEnv); v != "" {
		os.Exit(parentMain(v))
	}
	os.Exit(m.Run())
}

func parentMain(v string) int {
	mode, dir, _ := strings.Cut(v, ":")
	pids := filepath.Join(dir, "pids")
	r := NewRunner(nil)
	up := make(chan struct{})
	go r.Run(context.Background(), Spec{
		Argv: []string{"/bin/sh", "-c", fmt.Sprintf(
			"sleep 1000 & echo $$ $! > %[1]s.tmp; mv %[1]s.tmp %[1]s; echo up; wait", pids)},
		Stdout: func(l string) {
			if l == "up" {
				close(up)
			}
		},
	})
	<-up
	fmt.Printf("keeper %d\n", keeper.keeperPid())
	if mode == "exit" {
		return 0
	}
	select {}
}

// keeperPid returns the running keeper's pid, 0 if none.
func (k *keeperLink) keeperPid() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cmd == nil || k.cmd.Process == nil {
		return 0
	}
	return k.cmd.Process.Pid
}

// readPids returns the pids in file, once there are n.
func readPids(t *testing.T, file string, n int) []int {
	t.Helper()
	var pids []int
	waitFor(t, "the pids in "+file, func() bool {
		b, _ := os.ReadFile(file)
		pids = pids[:0]
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return len(pids) >= n
	})
	return pids
}

// A program and what it started in its process group do not outlive the
// process that runs them, whether that process is killed with SIGKILL
// (nothing of it runs any more) or exits while they run; the keeper goes
// with them.
func TestRunProgramsDieWithTheirParent(t *testing.T) {
	for _, mode := range []string{"kill", "exit"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			parent := osexec.Command(os.Args[0], "-test.run=^$")
			parent.Env = append(os.Environ(), parentEnv+"="+mode+":"+dir)
			var out harness.SyncBuffer
			parent.Stdout, parent.Stderr = &out, &out
			if err := parent.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- parent.Wait() }()
			pids := readPids(t, filepath.Join(dir, "pids"), 2)
			t.Cleanup(func() {
				for _, pid := range pids {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			})
			var keeperPid int
			waitFor(t, "the parent to name its keeper", func() bool {
				_, err := fmt.Sscanf(out.String(), "keeper %d", &keeperPid)
				return err == nil
			})
			if mode == "kill" {
				parent.Process.Kill()
			}
			if err := <-exited; mode == "exit" && err != nil {
				t.Fatalf("the parent: %v\n%s", err, out.String())
			}
			for _, pid := range pids {
				waitFor(t, fmt.Sprintf("the parent's program %d (of %v) to be gone", pid, pids), func() bool { return gone(pid) })
			}
			if tieToParent {
				if keeperPid == 0 {
					t.Fatalf("no keeper ran\n%s", out.String())
				}
				waitFor(t, "the keeper to exit", func() bool { return gone(keeperPid) })
			}
		})
	}
}

// Stop kills what runs and refuses what comes after.
func TestRunnerStop(t *testing.T) {
	r := NewRunner(nil)
	var out collect
	up := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := r.Run(context.Background(), Spec{Argv: []string{"/bin/sh", "-c", "sleep 1000 & echo $$ $!; wait"},
			Stdout: func(l string) { out.add(l); close(up) }})
		done <- err
	}()
	<-up
	r.Stop()
	err := <-done
	if err == nil || !strings.Contains(err.Error(), ErrStopped.Error()) {
		t.Fatalf("Run after Stop: %v, want ErrStopped", err)
	}
	for _, f := range strings.Fields(out.all()[0]) {
		pid, _ := strconv.Atoi(f)
		waitFor(t, "pid "+f+" to be gone", func() bool { return gone(pid) })
	}
	if _, err := r.Run(context.Background(), Spec{Argv: []string{"/bin/true"}}); err == nil {
		t.Fatal("Run after Stop ran")
	}
}
