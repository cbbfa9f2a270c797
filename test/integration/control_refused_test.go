package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// refusedLine is one line of the audit log about refused changes.
type refusedLine struct {
	Msg        string `json:"msg"`
	Pid        uint32 `json:"pid"`
	Uid        uint32 `json:"uid"`
	Gid        uint32 `json:"gid"`
	Comm       string `json:"comm"`
	Endpoint   string `json:"endpoint"`
	Path       string `json:"path"`
	Code       string `json:"code"`
	Why        string `json:"why"`
	Caller     string `json:"caller"`
	Suppressed int    `json:"suppressed"`
}

func readRefused(t *testing.T, path string) []refusedLine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []refusedLine
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		var l refusedLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if l.Msg == "refused" || l.Msg == "refusals suppressed" {
			out = append(out, l)
		}
	}
	return out
}

// A change refused to a non-root caller (403) is in the audit log with
// who asked, what and why; a storm of them is rate-limited, the lines
// held back counted, so that lines plus suppressed account for every
// refusal.
func TestControlRefusedChangesAreAudited(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("this test needs curl for a storm of requests from one process: %v", err)
	}
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	d := startCtl(t, "--socket-mode=0666", "--audit-log="+auditPath)
	binDirReachable(t)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}

	_, errOut, code := d.ctl(t, nobody, "register", "evil", "char", "1", "1")
	if code != 5 || !strings.Contains(errOut, "permission_denied") {
		t.Fatalf("ctl register as nobody: exit %d %q; want 5 and permission_denied", code, errOut)
	}
	var first refusedLine
	until(t, "the refusal's audit line", func() bool {
		for _, l := range readRefused(t, auditPath) {
			if l.Msg == "refused" && l.Path == "evil" {
				first = l
				return true
			}
		}
		return false
	})
	if first.Uid != 65534 || first.Gid != 65534 || first.Pid == 0 || first.Comm != "devfsd" ||
		first.Endpoint != "/v1/register" || first.Code != "permission_denied" || !strings.Contains(first.Why, "uid 65534") {
		t.Fatalf("audit line %+v", first)
	}

	// The storm: one process, many refused requests on one connection.
	const storm = 300
	args := []string{"-s", "--unix-socket", d.sock, "-d", `{"path":"storm","type":"dir"}`}
	for i := 0; i < storm; i++ {
		args = append(args, "http://devfsd/v1/register")
	}
	cmd := exec.Command(curl, args...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
	start := time.Now()
	out, err := cmd.Output()
	took := time.Since(start)
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	if n := strings.Count(string(out), `"code":"permission_denied"`); n != storm {
		t.Fatalf("%d of %d requests refused: %s", n, storm, out)
	}
	if _, err := os.Lstat(d.path("storm")); err == nil {
		t.Error("a refused register made its node")
	}
	d.stop() // the closing summary is written at exit

	var lines, suppressed int
	for _, l := range readRefused(t, auditPath) {
		switch {
		case l.Msg == "refused" && l.Uid == 65534:
			lines++
			suppressed += l.Suppressed
		case l.Msg == "refusals suppressed" && l.Caller == "uid 65534":
			suppressed += l.Suppressed
		}
	}
	// The bucket of one uid: a burst of 5, then 1 a second.
	bound := 5 + int(took.Seconds()) + 1
	t.Logf("%d refusals in %v: %d audit lines, %d suppressed (bound %d)", storm+1, took.Round(time.Millisecond), lines, suppressed, bound)
	if lines > bound {
		t.Errorf("%d audit lines for the storm, want at most %d", lines, bound)
	}
	if lines+suppressed != storm+1 {
		t.Errorf("%d lines + %d suppressed != %d refusals", lines, suppressed, storm+1)
	}
}
