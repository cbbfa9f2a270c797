package integration

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devfsd/devfsd/test/harness"
)

// readmeRunCommand is the README's run command: the first indented line
// after the line that starts with "Run".
func readmeRunCommand(t *testing.T, root string) string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	seen := false
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "Run") {
			seen = true
		}
		if seen && strings.HasPrefix(l, "    ") {
			return strings.TrimSpace(l)
		}
	}
	t.Fatal("README.md has no run command")
	return ""
}

// The README's run command, run as a shell runs it (its own process
// group, as a job), builds the binary — so devfsd ctl exists — mounts,
// and stops cleanly on SIGTERM and on Ctrl-C (SIGINT) to the job: no
// process and no mount left. Paths are moved into the test's own
// directories; nothing else of the line is changed.
func TestReadmeRunCommandStopsCleanly(t *testing.T) {
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	line := readmeRunCommand(t, root)
	for _, want := range []string{"go build -o /usr/local/bin/devfsd ./cmd/devfsd", "/tmp/devfsd", "devfsd mount"} {
		if !strings.Contains(line, want) {
			t.Fatalf("the run command %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "go run") {
		t.Fatalf("the run command %q uses go run: SIGTERM to it orphans the daemon", line)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			bindir, base := t.TempDir(), t.TempDir()
			mnt := filepath.Join(base, "devfsd") // made by the command's mkdir -p
			t.Cleanup(func() {
				if mounted(t, mnt) {
					t.Errorf("%s left mounted", mnt)
					syscall.Unmount(mnt, syscall.MNT_DETACH)
				}
			})
			cmdline := strings.NewReplacer("/usr/local/bin/devfsd", filepath.Join(bindir, "devfsd"),
				"/tmp/devfsd", mnt).Replace(line)
			cmd := exec.Command("bash", "-c", cmdline)
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "PATH="+bindir+":"+os.Getenv("PATH"))
			var out harness.SyncBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			pgid := cmd.Process.Pid
			t.Cleanup(func() { syscall.Kill(-pgid, syscall.SIGKILL) })
			// The build comes first: generous, since the machine is shared.
			if !harness.Poll(5*time.Minute, 20*time.Millisecond, func() bool { return mounted(t, mnt) || exitedNow(exited) }) || !mounted(t, mnt) {
				t.Fatalf("the run command did not mount:\n%s", out.String())
			}
			if code, ctlOut := runBin(t, filepath.Join(bindir, "devfsd"), "ctl", "--mount", mnt, "ls"); code != 0 || !strings.Contains(ctlOut, "null") {
				t.Errorf("devfsd ctl --mount DIR ls: exit %d\n%s", code, ctlOut)
			}
			if err := syscall.Kill(-pgid, sig); err != nil {
				t.Fatal(err)
			}
			select {
			case <-exited:
			case <-time.After(15 * time.Second):
				t.Fatalf("still running 15s after %v:\n%s", sig, out.String())
			}
			if mounted(t, mnt) {
				t.Errorf("%s still mounted after %v:\n%s", mnt, sig, out.String())
			}
			if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("a process of the job is still alive after %v (%v)", sig, err)
			}
		})
	}
}

// exitedNow reports, without waiting, whether exited has fired; it puts
// the value back for the caller's later wait.
func exitedNow(exited chan error) bool {
	select {
	case err := <-exited:
		exited <- err
		return true
	default:
		return false
	}
}

// runBin runs bin with args to its end and returns its exit status and
// output.
func runBin(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}
