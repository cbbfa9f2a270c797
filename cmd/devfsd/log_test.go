package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

func TestUseConsole(t *testing.T) {
	tests := []struct {
		format   string
		terminal bool
		want     bool
	}{
		{"auto", true, true},
		{"auto", false, false},
		{"console", false, true},
		{"console", true, true},
		{"json", true, false},
		{"json", false, false},
	}
	for _, tt := range tests {
		if got := useConsole(tt.format, tt.terminal); got != tt.want {
			t.Errorf("useConsole(%q, terminal=%v) = %v, want %v", tt.format, tt.terminal, got, tt.want)
		}
	}
}

// A pipe, a file or a buffer is not a terminal: auto logs JSON lines.
func TestLoggerJSONWhenNotATerminal(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "info", "auto")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hidden")
	log.Info("hello", zap.String("k", "v"))
	_ = log.Sync()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("want one line (debug filtered at info), got %q", buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %q: %v", lines[0], err)
	}
	if m["msg"] != "hello" || m["level"] != "info" || m["k"] != "v" {
		t.Errorf("unexpected entry %v", m)
	}
}

func TestLoggerLevelAndForcedFormats(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "debug", "console")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("shown")
	_ = log.Sync()
	out := buf.String()
	if !strings.Contains(out, "DEBUG") || !strings.Contains(out, "shown") || strings.HasPrefix(out, "{") {
		t.Errorf("console format: %q", out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("colour codes written to a non-terminal: %q", out)
	}
	if _, err := newLogger(&buf, "loud", "json"); err == nil {
		t.Error("bad level accepted")
	}
}

// On a real terminal (a pty made here), auto picks the console encoder.
func TestLoggerConsoleOnATerminal(t *testing.T) {
	master, slave := openPTY(t)
	log, err := newLogger(slave, "info", "auto")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("to a person")
	_ = log.Sync()
	buf := make([]byte, 4096)
	n, err := master.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	out := string(buf[:n])
	if strings.HasPrefix(out, "{") || !strings.Contains(out, "to a person") || !strings.Contains(out, "INFO") {
		t.Errorf("want a console line on a terminal, got %q", out)
	}
}

// openPTY opens a pseudo-terminal pair with the kernel's ptmx, without a
// dependency: unlock the slave, ask its number, open it.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	s, err := os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}
