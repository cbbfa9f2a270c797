package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// nonRoot is the uid and gid the tests of this file run devfsd as
// (nobody's, on Debian).
const nonRoot = "65534"

// asNonRoot runs devfsd with args as uid and gid nonRoot through
// setpriv(1), with env added, and returns its exit status and output.
func asNonRoot(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed: .ci/run installs it")
	}
	binDirReachable(t)
	argv := append([]string{"--reuid", nonRoot, "--regid", nonRoot, "--clear-groups", devfsdBin}, args...)
	cmd := exec.Command(setpriv, argv...)
	cmd.Dir = "/"
	// A clean environment: no XDG_RUNTIME_DIR or DEVFSD_SOCKET of root's.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "GORACE=atexit_sleep_ms=0 halt_on_error=0"}, env...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// A user other than root reading a root daemon's 0600 socket is told
// "permission denied", the socket's mode and what to change, with exit
// status 5 — not "daemon unreachable".
func TestNonRootCtlOnRootSocketSaysPermissionDenied(t *testing.T) {
	d := startCtl(t)
	code, out := asNonRoot(t, nil, "ctl", "--socket", d.sock, "ls")
	if code != 5 || !strings.Contains(out, "permission denied") || !strings.Contains(out, "mode 0600") ||
		!strings.Contains(out, "--socket-mode") || strings.Contains(out, "unreachable") {
		t.Errorf("non-root ctl ls on a 0600 socket: exit %d %q, want 5 and permission denied with what to change", code, out)
	}
	// Root still reads it: the daemon is reachable, the refusal was the user's.
	if out := d.mustCtl(t, "ls"); !strings.Contains(out, "null") {
		t.Errorf("root ctl ls: %q", out)
	}
}

// A user other than root gets a default socket of their own under
// $XDG_RUNTIME_DIR; without one, the error says which flag to pass.
func TestNonRootDefaultSocket(t *testing.T) {
	base := t.TempDir()
	for _, d := range []string{filepath.Dir(base), base} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mnt := filepath.Join(base, "mnt")
	xdg := filepath.Join(base, "xdg")
	for _, d := range []string{mnt, xdg} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"mount", "--allow-other=false", "--log-format=json", mnt}

	code, out := asNonRoot(t, nil, args...)
	if code == 0 || !strings.Contains(out, "control socket /run/devfsd/") || !strings.Contains(out, "XDG_RUNTIME_DIR") ||
		!strings.Contains(out, "--socket PATH") {
		t.Errorf("without XDG_RUNTIME_DIR: exit %d %q, want an error saying what to pass", code, out)
	}

	// With it, the socket is made there (the mount itself may then fail
	// for want of fusermount3: the socket comes first, and is removed).
	_, out = asNonRoot(t, []string{"XDG_RUNTIME_DIR=" + xdg}, args...)
	want := `"socket":"` + filepath.Join(xdg, "devfsd") + "/"
	if !strings.Contains(out, want) {
		t.Errorf("with XDG_RUNTIME_DIR: the daemon did not take a socket in %s:\n%s", xdg, out)
	}
	if strings.Contains(out, `"socket":"/run/devfsd`) || strings.Contains(out, "control socket /run/devfsd") {
		t.Errorf("with XDG_RUNTIME_DIR the daemon still tried /run/devfsd:\n%s", out)
	}
	if mounted(t, mnt) {
		t.Errorf("%s left mounted", mnt)
	}
}
