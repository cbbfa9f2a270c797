package integration

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/test/harness"
)

// scrape reads the daemon's /metrics from its socket as name{labels} ->
// value.
func scrape(t *testing.T, d *ctlDaemon) map[string]float64 {
	t.Helper()
	text, err := d.c.Metrics(context.Background())
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	return parseMetrics(text)
}

func parseMetrics(text string) map[string]float64 {
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			m[l[:i]] = v
		}
	}
	return m
}

// sum adds the values of every series of metric name.
func sum(m map[string]float64, name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// startCtlOpts is startCtl with the daemon's options (environment).
func startCtlOpts(t *testing.T, o opts, args ...string) *ctlDaemon {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(dir, "devfsd.sock")
	o.args = append([]string{"--socket=" + sock}, args...)
	d := start(t, o)
	c := client.New(sock)
	t.Cleanup(c.Close)
	return &ctlDaemon{daemon: d, sock: sock, c: c}
}

// untilOr is until, saying why at the deadline.
func untilOr(t *testing.T, what string, cond func() bool, why func() string) {
	t.Helper()
	if !harness.Poll(condDeadline, 5*time.Millisecond, cond) {
		t.Fatalf("timed out waiting for %s: %s", what, why())
	}
}
