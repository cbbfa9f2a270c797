package integration

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A storm of 10,000 misses on one name: the audit log (the JSON-lines
// file, and the daemon's own log) stays bounded by the per-name rate
// limit, the lines it holds back are counted ("suppressed") so that lines
// plus suppressed account for every miss, and another name's miss during
// the storm is logged.
func TestAuditStormBounded(t *testing.T) {
	auditPath := filepath.Join(t.TempDir(), "audit.jsonl")
	// No negative caching anywhere: every stat is a miss the loader sees.
	d := startCtl(t, "--audit-log="+auditPath, "--negative-timeout=0", "--log-level=info")
	const storm = 10000
	start := time.Now()
	for i := 0; i < storm; i++ {
		if err := unix.Lstat(d.path("nvidia0-storm"), new(unix.Stat_t)); err != unix.ENOENT {
			t.Fatalf("stat %d: %v", i, err)
		}
		if i == storm/2 {
			unix.Lstat(d.path("quiet-name"), new(unix.Stat_t))
		}
	}
	took := time.Since(start)
	m := scrape(t, d)
	d.stop() // the closing summary is written at exit

	f, err := os.Open(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines, suppressed int
	var quiet bool
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Msg        string `json:"msg"`
			Name       string `json:"name"`
			Pid        uint32 `json:"pid"`
			Comm       string `json:"comm"`
			Loader     string `json:"loader"`
			Result     string `json:"result"`
			Duration   float64
			Suppressed int `json:"suppressed"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		switch rec.Name {
		case "quiet-name":
			quiet = true
		case "nvidia0-storm":
			if rec.Msg == "miss" {
				lines++
				if rec.Pid == 0 || rec.Comm == "" || rec.Loader != "builtin" || rec.Result != "absent" {
					t.Errorf("audit line without its fields: %s", sc.Text())
				}
			}
			suppressed += rec.Suppressed
		}
	}
	// The bucket: a burst of 5, then 1 a second.
	bound := 5 + int(took.Seconds()) + 1
	t.Logf("%d misses in %v: %d audit lines, %d suppressed (bound %d); %v loads counted", storm, took.Round(time.Millisecond),
		lines, suppressed, bound, m[`devfsd_loads_total{loader="builtin",result="absent"}`])
	if lines > bound {
		t.Errorf("%d audit lines for the storm, want at most %d", lines, bound)
	}
	if lines+suppressed < storm {
		t.Errorf("%d lines + %d suppressed < %d misses: decisions went uncounted", lines, suppressed, storm)
	}
	if !quiet {
		t.Error("the miss of another name during the storm was not logged")
	}
	if m[`devfsd_audit_suppressed_total`] < storm-float64(bound) {
		t.Errorf("devfsd_audit_suppressed_total %v", m[`devfsd_audit_suppressed_total`])
	}
	if n := strings.Count(d.out.String(), `"nvidia0-storm"`); n > bound+2 {
		t.Errorf("the daemon's log has %d lines for the storm", n)
	}
}
