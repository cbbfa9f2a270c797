package integration

// The helper's one-request answer (POST /v1/helper/done carrying the
// registrations, docs/api.md) from a real helper process (./testhelper)
// against a real mount, each lookup made by a separate process.

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devfsd/devfsd/control/wire"
)

// statFromChild runs stat(1) on p and returns its "TYPE MAJOR:MINOR"
// (hex, as stat prints them), or the error.
func statFromChild(t *testing.T, p string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, "stat", "-c", "%F %t:%T", p)
	cmd.Dir = "/"
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// listed reports whether the socket's listing and readdir of the mount's
// root both hold name.
func listed(t *testing.T, d *ctlDaemon, name string) (socket, mount bool) {
	t.Helper()
	l, err := d.c.List(context.Background(), "", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		socket = socket || n.Path == name
	}
	ents, err := os.ReadDir(d.mnt)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		mount = mount || e.Name() == name
	}
	return socket, mount
}

// A helper that answers with one done carrying the registration: a stat
// from another process sees the device, the listing has it, and the
// daemon counts the answer as one that carried its registrations.
func TestHelperOneRequestAnswer(t *testing.T) {
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	h := startHelper(t, d, "--one-request")
	got, err := statFromChild(t, d.path("widget"))
	if err != nil || got != "character special file 1:3" {
		t.Fatalf("stat(1) of a name the helper provides: %q, %v", got, err)
	}
	h.waitLine("registered widget", func(l string) bool { return l == "registered widget" })
	if s, m := listed(t, d, "widget"); !s || !m {
		t.Fatalf("widget listed: socket %v, mount %v", s, m)
	}
	s, err := d.c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Helper.Sent != 1 || s.Helper.Answered != 1 || s.Helper.AnsweredRegistering != 1 {
		t.Fatalf("helper stats %+v, want one lookup answered in one request", s.Helper)
	}
}

// The two-request form (register, then done) still answers a lookup.
func TestHelperTwoRequestAnswer(t *testing.T) {
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	startHelper(t, d)
	got, err := statFromChild(t, d.path("gadget"))
	if err != nil || got != "character special file 1:3" {
		t.Fatalf("stat(1) of a name the helper provides: %q, %v", got, err)
	}
	if s, m := listed(t, d, "gadget"); !s || !m {
		t.Fatalf("gadget listed: socket %v, mount %v", s, m)
	}
	s, err := d.c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Helper.Answered != 1 || s.Helper.AnsweredRegistering != 0 {
		t.Fatalf("helper stats %+v, want one lookup answered by a plain done", s.Helper)
	}
}

// A one-request answer with an invalid registration is refused whole:
// the error names it, its valid sibling is not registered, and the
// lookup is not released — the helper's corrected answer, sent after,
// is what the stat sees.
func TestHelperMalformedOneRequestChangesNothing(t *testing.T) {
	d := startCtl(t, "--loader=none", "--negative-timeout=0s")
	h := startHelper(t, d, "--one-request", "--bad-first")
	got, err := statFromChild(t, d.path("thing"))
	if err != nil || got != "character special file 1:3" {
		t.Fatalf("stat(1) after a refused and a corrected answer: %q, %v (a refused answer released the lookup?)", got, err)
	}
	h.waitLine("the refusal", func(l string) bool {
		return l == "refused "+wire.CodeInvalidDevice+" register[1].major"
	})
	for _, name := range []string{"thing-first", "thing-bad"} {
		if s, m := listed(t, d, name); s || m {
			t.Errorf("%s of the refused answer is listed: socket %v, mount %v", name, s, m)
		}
	}
}

// A helper that dies halfway through sending a one-request answer
// changes nothing: the partial request registers nothing, the pending
// lookup is answered at once (not after the 30 s loader timeout), and a
// new helper serves.
func TestHelperDiesMidOneRequest(t *testing.T) {
	d := startCtl(t, "--loader=none", "--negative-timeout=0s", "--loader-timeout=30s")
	h := startHelper(t, d, "--one-request", "--die-mid-request")
	start := time.Now()
	_, err := os.Stat(d.path("halfway"))
	if !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat while the helper died mid-answer: %v, want ENOENT", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the lookup took %v; the helper's death should end it at once (loader timeout 30s)", took)
	}
	h.waitLine("dying", func(l string) bool { return strings.HasPrefix(l, "dying ") })
	<-h.exited
	if s, m := listed(t, d, "halfway"); s || m {
		t.Fatalf("the half-sent registration is listed: socket %v, mount %v", s, m)
	}
	until(t, "the helper detached", func() bool {
		s, err := d.c.Stats(context.Background())
		return err == nil && !s.Helper.Attached
	})
	if s, _ := d.c.Stats(context.Background()); s.Helper.Aborted != 1 || s.Helper.Answered != 0 {
		t.Errorf("helper stats %+v, want 1 aborted, 0 answered", s.Helper)
	}
	startHelper(t, d, "--one-request")
	if got, err := statFromChild(t, d.path("afterwards")); err != nil || got != "character special file 1:3" {
		t.Fatalf("the next helper's answer: %q, %v", got, err)
	}
}
