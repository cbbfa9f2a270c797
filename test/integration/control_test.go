package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/test/harness"
)

// A helper in a separate process answers LOOKUP by registering the node,
// and stat on the mount succeeds; 100 concurrent lookups of one name
// reach the helper as one LOOKUP; the helper's own registration is not
// echoed back to it.
func TestControlHelperAnswersLookup(t *testing.T) {
	d := startCtl(t)
	h := startHelper(t, d, "--delay=200ms")

	st, err := os.Stat(d.path("helped0"))
	if err != nil {
		t.Fatalf("stat of a name the helper provides: %v", err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if st.Mode()&os.ModeCharDevice == 0 || unix.Major(sys.Rdev) != 1 || unix.Minor(sys.Rdev) != 3 {
		t.Fatalf("helped0: mode %v rdev %d:%d", st.Mode(), unix.Major(sys.Rdev), unix.Minor(sys.Rdev))
	}

	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := os.Stat(d.path("burst"))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("one of %d concurrent stats: %v", n, err)
		}
	}
	isLookup := func(name string) func(string) bool {
		return func(l string) bool { return strings.HasPrefix(l, "lookup ") && strings.HasSuffix(l, " "+name) }
	}
	if got := h.count(isLookup("burst")); got != 1 {
		t.Fatalf("%d concurrent lookups of one name reached the helper as %d LOOKUPs, want 1", n, got)
	}
	if got := h.count(isLookup("helped0")); got != 1 {
		t.Fatalf("helped0: %d LOOKUPs", got)
	}
	// Someone else's registration reaches the helper as an event; its own
	// do not.
	d.mustCtl(t, "register", "other", "char", "1", "5")
	h.waitLine("the control API's REGISTER", func(l string) bool {
		return strings.HasPrefix(l, "event ") && strings.Contains(l, " REGISTER other control")
	})
	for _, l := range h.all() {
		if strings.HasPrefix(l, "event ") && (strings.Contains(l, " burst ") || strings.Contains(l, " helped0 ")) {
			t.Errorf("the helper's own change was echoed to it: %q", l)
		}
	}
	s, err := d.c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !s.Helper.Attached || s.Helper.Sent != 2 || s.Helper.Answered != 2 {
		t.Fatalf("helper stats %+v", s.Helper)
	}
}

// The helper's own stat of a missing name, and a child's, answer ENOENT
// at once instead of waiting on the helper (the loader timeout is 30 s).
func TestControlHelperOwnLookupDoesNotWait(t *testing.T) {
	d := startCtl(t, "--loader-timeout=30s")
	h := startHelper(t, d, "--hang", "--self-stat=missing")
	self := strings.Fields(h.waitLine("selfstat", func(l string) bool { return strings.HasPrefix(l, "selfstat ") }))
	if self[2] != strconv.Itoa(int(syscall.ENOENT)) {
		t.Fatalf("the helper's own stat: errno %s, want ENOENT", self[2])
	}
	// Waiting on the helper would take the 30 s loader timeout; a third of
	// it leaves a loaded machine room and still tells the two apart.
	if ms, _ := strconv.Atoi(self[3]); ms > 10000 {
		t.Fatalf("the helper's own stat took %d ms", ms)
	}
	child := strings.Fields(h.waitLine("execstat", func(l string) bool { return strings.HasPrefix(l, "execstat ") }))
	if child[2] != "1" {
		t.Fatalf("stat(1) run by the helper: exit %s, want 1", child[2])
	}
	if ms, _ := strconv.Atoi(child[3]); ms > 10000 {
		t.Fatalf("stat(1) run by the helper took %d ms", ms)
	}
	if n := h.count(func(l string) bool { return strings.HasPrefix(l, "lookup ") }); n != 0 {
		t.Fatalf("the helper's own lookups reached it as %d LOOKUPs", n)
	}
}

// SIGKILL of the helper with 50 lookups pending answers them all at once
// (within a third of the 30 s loader timeout, which they would otherwise
// wait out: room for a loaded machine); the fallback loader serves; a new
// helper can attach.
func TestControlHelperKilledWithPendingLookups(t *testing.T) {
	d := startCtl(t, "--loader-timeout=30s")
	h := startHelper(t, d, "--hang")
	const n = 50
	type result struct {
		err error
		at  time.Time
	}
	results := make(chan result, n)
	for i := 0; i < n; i++ {
		go func() {
			_, err := os.Stat(d.path(fmt.Sprintf("pending%d", i)))
			results <- result{err, time.Now()}
		}()
	}
	h.waitLines("50 pending lookups", n, func(l string) bool { return strings.HasPrefix(l, "lookup ") })
	killed := time.Now()
	h.kill()
	deadline := time.After(condDeadline)
	for i := 0; i < n; i++ {
		select {
		case r := <-results:
			if !errors.Is(r.err, syscall.ENOENT) {
				t.Errorf("pending lookup answered %v, want ENOENT", r.err)
			}
			if late := r.at.Sub(killed); late > 10*time.Second {
				t.Errorf("pending lookup answered %v after the kill, want within 10s (the loader timeout is 30s)", late)
			}
		case <-deadline:
			t.Fatalf("only %d of %d pending lookups answered", i, n)
		}
	}
	until(t, "the helper detached", func() bool {
		s, err := d.c.Stats(context.Background())
		return err == nil && !s.Helper.Attached
	})
	// The fallback (built-in) loader serves misses again.
	if _, err := os.Stat(d.path("loop0")); err != nil {
		t.Fatalf("the fallback loader after the helper died: %v", err)
	}
	if s, _ := d.c.Stats(context.Background()); s.Helper.Aborted != n {
		t.Errorf("helper stats %+v, want %d aborted", s.Helper, n)
	}
	// A new helper attaches and answers.
	startHelper(t, d)
	if _, err := os.Stat(d.path("afterwards")); err != nil {
		t.Fatalf("the new helper's node: %v", err)
	}
}

// A second helper is refused while one is attached; a non-root one too.
func TestControlOneHelperOnly(t *testing.T) {
	d := startCtl(t)
	startHelper(t, d, "--hang")
	_, err := d.c.AttachHelper(context.Background())
	if client.Code(err) != wire.CodeHelperAttached {
		t.Fatalf("a second helper: %v, want %s", err, wire.CodeHelperAttached)
	}
}

// monitorProc runs devfsd ctl monitor and collects its lines.
type monitorProc struct {
	cmd   *exec.Cmd
	out   *harness.SyncBuffer
	waitc chan error
}

func startMonitor(t *testing.T, d *ctlDaemon, args ...string) *monitorProc {
	t.Helper()
	m := &monitorProc{out: &harness.SyncBuffer{}, waitc: make(chan error, 1)}
	m.cmd = exec.Command(devfsdBin, append([]string{"ctl", "--socket=" + d.sock, "monitor"}, args...)...)
	m.cmd.Dir = "/"
	m.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.waitc <- m.cmd.Wait() }()
	t.Cleanup(func() {
		m.cmd.Process.Kill()
		<-m.waitc
	})
	return m
}

func subscribers(d *ctlDaemon) int {
	s, err := d.c.Stats(context.Background())
	if err != nil {
		return -1
	}
	return s.Events.Subscribers
}

// devfsd ctl monitor shows the events of a scripted session, in order,
// with increasing sequence numbers; SIGINT ends it with status 0.
func TestControlMonitorShowsSessionInOrder(t *testing.T) {
	d := startCtl(t)
	js := startMonitor(t, d, "--json")
	human := startMonitor(t, d)
	until(t, "both monitors subscribed", func() bool { return subscribers(d) == 2 })

	d.mustCtl(t, "register", "sess/tty9", "char", "4", "9", "--mode=0620", "--gid=5")
	d.mustCtl(t, "chmod", "0600", "sess/tty9")
	if err := os.Mkdir(d.path("sess/made"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(d.path("sess/made")); err != nil {
		t.Fatal(err)
	}
	os.Stat(d.path("sess/nothing")) // a miss: LOOKUP
	d.mustCtl(t, "unregister", "sess")

	want := []string{
		"REGISTER sess", "REGISTER sess/tty9", "CHANGE sess/tty9", "LOOKUP sess/made", "CREATE sess/made",
		"DELETE sess/made", "LOOKUP sess/nothing", "UNREGISTER sess/tty9", "UNREGISTER sess",
	}
	var recs []wire.Record
	until(t, "the session's events in the monitor", func() bool {
		recs = recs[:0]
		for _, l := range strings.Split(js.out.String(), "\n") {
			var r wire.Record
			if json.Unmarshal([]byte(l), &r) == nil && r.Type == "event" && strings.HasPrefix(r.Path, "sess") {
				recs = append(recs, r)
			}
		}
		return len(recs) >= len(want)
	})
	var got []string
	for i, r := range recs {
		got = append(got, r.Kind+" "+r.Path)
		if i > 0 && r.Seq <= recs[i-1].Seq {
			t.Errorf("seq %d after %d", r.Seq, recs[i-1].Seq)
		}
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Fatalf("monitor --json showed\n  %s\nwant\n  %s", strings.Join(got, ", "), strings.Join(want, ", "))
	}
	if recs[1].NodeType != "char" || recs[1].Major != 4 || recs[1].Minor != 9 || recs[1].Mode != "0620" ||
		recs[1].Gid != 5 || recs[1].Origin != "control" || recs[2].Mode != "0600" || recs[4].Origin != "fuse" {
		t.Errorf("records %+v", recs[:5])
	}
	until(t, "the human monitor's lines", func() bool { return strings.Contains(human.out.String(), "UNREGISTER sess ") })
	var order []string
	for _, l := range strings.Split(human.out.String(), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && strings.HasPrefix(f[2], "sess") {
			order = append(order, f[1]+" "+f[2])
		}
	}
	if strings.Join(order, ", ") != strings.Join(want, ", ") {
		t.Fatalf("monitor showed\n  %s\nwant\n  %s\n%s", strings.Join(order, ", "), strings.Join(want, ", "), human.out.String())
	}
	human.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-human.waitc:
		human.waitc <- err // for the cleanup
		if err != nil {
			t.Fatalf("monitor after SIGINT: %v", err)
		}
	case <-time.After(condDeadline):
		t.Fatal("monitor did not end on SIGINT")
	}
}

// churn registers and unregisters a directory of n nodes, ~2n+2 events.
func churn(t *testing.T, c *client.Client, round, n int) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; i++ {
		maj, min := int64(1), int64(i)
		if _, err := c.Register(ctx, wire.RegisterRequest{Path: fmt.Sprintf("churn%d/n%d", round, i), Type: "char", Major: &maj, Minor: &min}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Unregister(ctx, fmt.Sprintf("churn%d", round)); err != nil {
		t.Fatal(err)
	}
}

// A consumer that stops reading gets an overrun record with the count it
// missed, and namespace operations do not slow down meanwhile.
func TestControlSlowConsumerGetsOverrun(t *testing.T) {
	d := startCtl(t)
	const n = 1500 // ~3000 events of ~250 bytes: more than the socket buffers hold
	// Warm up, then the baseline with nobody subscribed.
	churn(t, d.c, 0, 100)
	start := time.Now()
	churn(t, d.c, 1, n)
	base := time.Since(start)

	stalled, err := d.c.Events(context.Background(), 16)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	until(t, "the consumer subscribed", func() bool { return subscribers(d) == 1 })
	start = time.Now()
	churn(t, d.c, 2, n)
	withStalled := time.Since(start)
	t.Logf("%d registrations and an unregister: %v alone, %v with a consumer that does not read", n, base, withStalled)
	if withStalled > 3*base+time.Second {
		t.Errorf("a consumer that does not read slowed the namespace down: %v against %v", withStalled, base)
	}
	s, err := d.c.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Events.Missed == 0 {
		t.Fatalf("no events missed: %+v", s.Events)
	}
	// Now it reads: the events it kept, then an overrun with the count.
	var kept, last uint64
	for {
		rec, err := stalled.Next()
		if err != nil {
			t.Fatalf("stream: %v after %d events", err, kept)
		}
		if rec.Type == "overrun" {
			if rec.Missed == 0 || rec.FirstSeq <= last || rec.LastSeq < rec.FirstSeq {
				t.Fatalf("overrun %+v after seq %d", rec, last)
			}
			if rec.Missed > s.Events.Missed {
				t.Fatalf("overrun says %d missed, stats %d", rec.Missed, s.Events.Missed)
			}
			break
		}
		kept++
		last = rec.Seq
	}
	// The stream goes on after the overrun.
	d.mustCtl(t, "register", "after-overrun", "dir")
	for {
		rec, err := stalled.Next()
		if err != nil {
			t.Fatal(err)
		}
		if rec.Type == "event" && rec.Path == "after-overrun" {
			break
		}
	}
}

// tree lists the whole namespace as the daemon has it.
func tree(t *testing.T, d *ctlDaemon) string {
	t.Helper()
	l, err := d.c.List(context.Background(), "", true)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, n := range l.Nodes {
		fmt.Fprintf(&b, "%s %s %s %d:%d %d:%d %s\n", n.Path, n.Type, n.Mode, n.Uid, n.Gid, n.Major, n.Minor, n.Target)
	}
	return b.String()
}

// rawRequest sends one request over the socket and returns the status and
// the error code of the answer.
func rawRequest(t *testing.T, sock, method, target, body string) (int, string) {
	t.Helper()
	status, b := rawAnswer(t, sock, method, target, body)
	var eb wire.ErrorBody
	json.Unmarshal(b, &eb)
	if status >= 400 && (eb.Error.Code == "" || eb.Error.Message == "") {
		t.Errorf("%s %s: status %d without a JSON error: %s", method, target, status, b)
	}
	return status, eb.Error.Code
}

// Malformed and hostile requests are each answered with the documented
// error and change nothing: not the daemon's tree, not the mount.
func TestControlBadInputChangesNothing(t *testing.T) {
	d := startCtl(t, "--socket-mode=0666")
	d.mustCtl(t, "register", "keep/dev", "char", "1", "3", "--mode=0640")
	before := tree(t, d)
	mntBefore, err := os.ReadDir(d.mnt)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("n", 256)
	for _, tt := range []struct {
		name, method, target, body string
		status                     int
		code                       string
	}{
		{"bad JSON", "POST", "/v1/register", `{"path": "x", "type": "dir"`, 400, wire.CodeBadJSON},
		{"not an object", "POST", "/v1/register", `["x","dir"]`, 400, wire.CodeBadJSON},
		{"two objects", "POST", "/v1/register", `{"path":"x","type":"dir"}{"path":"y","type":"dir"}`, 400, wire.CodeBadJSON},
		{"huge body", "POST", "/v1/register", `{"path":"x","type":"dir","target":"` + strings.Repeat("a", 70<<10) + `"}`, 413, wire.CodeBodyTooLarge},
		{"dotdot", "POST", "/v1/register", `{"path":"keep/../../etc","type":"dir"}`, 400, wire.CodeInvalidPath},
		{"dotdot unregister", "POST", "/v1/unregister", `{"path":"keep/.."}`, 400, wire.CodeInvalidPath},
		{"absolute", "POST", "/v1/register", `{"path":"/etc/passwd","type":"dir"}`, 400, wire.CodeInvalidPath},
		{"NUL", "POST", "/v1/register", `{"path":"keep/a\u0000b","type":"dir"}`, 400, wire.CodeInvalidPath},
		{"NUL in query", "GET", "/v1/stat?path=keep%00x", "", 400, wire.CodeInvalidPath},
		{"256-byte name", "POST", "/v1/register", `{"path":"keep/` + long + `","type":"dir"}`, 400, wire.CodeNameTooLong},
		{"256-byte name chmod", "POST", "/v1/chmod", `{"path":"` + long + `","mode":"0600"}`, 400, wire.CodeNameTooLong},
		{"negative major", "POST", "/v1/register", `{"path":"x","type":"char","major":-1,"minor":0}`, 400, wire.CodeInvalidDevice},
		{"negative minor", "POST", "/v1/register", `{"path":"x","type":"char","major":1,"minor":-5}`, 400, wire.CodeInvalidDevice},
		{"major 4096", "POST", "/v1/register", `{"path":"x","type":"block","major":4096,"minor":0}`, 400, wire.CodeInvalidDevice},
		{"minor 2^20", "POST", "/v1/register", `{"path":"x","type":"char","major":1,"minor":1048576}`, 400, wire.CodeInvalidDevice},
		{"major a string", "POST", "/v1/register", `{"path":"x","type":"char","major":"1","minor":0}`, 400, wire.CodeBadType},
		{"path a number", "POST", "/v1/register", `{"path":7,"type":"dir"}`, 400, wire.CodeBadType},
		{"mode a number", "POST", "/v1/chmod", `{"path":"keep/dev","mode":420}`, 400, wire.CodeBadType},
		{"uid a bool", "POST", "/v1/chown", `{"path":"keep/dev","uid":true}`, 400, wire.CodeBadType},
		{"mode with type bits", "POST", "/v1/chmod", `{"path":"keep/dev","mode":"0100644"}`, 400, wire.CodeInvalidMode},
		{"unknown field", "POST", "/v1/register", `{"path":"x","type":"dir","evil":1}`, 400, wire.CodeUnknownField},
		{"case-folded field", "POST", "/v1/unregister", `{"Path":"keep"}`, 400, wire.CodeUnknownField},
		{"duplicate field", "POST", "/v1/unregister", `{"path":"nope","path":"keep"}`, 400, wire.CodeDuplicateField},
		{"bad type", "POST", "/v1/register", `{"path":"x","type":"regular"}`, 400, wire.CodeInvalidType},
		{"exists", "POST", "/v1/register", `{"path":"keep/dev","type":"char","major":1,"minor":5}`, 409, wire.CodeExists},
		{"parent not a dir", "POST", "/v1/register", `{"path":"keep/dev/x","type":"dir"}`, 409, wire.CodeNotDir},
		{"unregister missing", "POST", "/v1/unregister", `{"path":"nope"}`, 404, wire.CodeNotFound},
		{"unregister root", "POST", "/v1/unregister", `{"path":""}`, 400, wire.CodeInvalidPath},
		{"unknown endpoint", "GET", "/v1/frobnicate", "", 404, wire.CodeUnknownEndpoint},
		{"wrong method", "GET", "/v1/register", "", 405, wire.CodeMethod},
		{"unknown parameter", "GET", "/v1/stat?path=keep&x=1", "", 400, wire.CodeUnknownField},
		{"bad timeout", "GET", "/v1/wait?path=x&timeout=-1s", "", 400, wire.CodeInvalidArgument},
		{"done from a non-helper", "POST", "/v1/helper/done", `{"id":1}`, 403, wire.CodeNotHelper},
		{"reload with a field", "POST", "/v1/reload", `{"config":"x"}`, 400, wire.CodeUnknownField},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, code := rawRequest(t, d.sock, tt.method, tt.target, tt.body)
			if status != tt.status || code != tt.code {
				t.Errorf("answered %d %q, want %d %q", status, code, tt.status, tt.code)
			}
		})
	}

	// Non-root: reads work, changes are refused with permission_denied
	// (ctl exit status 5).
	binDirReachable(t)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	if out, errOut, code := d.ctl(t, nobody, "stat", "keep/dev"); code != 0 || !strings.Contains(out, "keep/dev") {
		t.Fatalf("stat as nobody: exit %d %s %s", code, out, errOut)
	}
	for _, args := range [][]string{
		{"register", "evil", "char", "1", "1"},
		{"unregister", "keep"},
		{"chmod", "0666", "keep/dev"},
		{"chown", "65534", "keep/dev"},
		{"reload"},
	} {
		_, errOut, code := d.ctl(t, nobody, args...)
		if code != 5 || !strings.Contains(errOut, "devfsd: ctl: permission_denied") {
			t.Errorf("ctl %q as nobody: exit %d, %q; want 5 and permission_denied", args, code, errOut)
		}
	}

	if after := tree(t, d); after != before {
		t.Fatalf("the tree changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	mntAfter, err := os.ReadDir(d.mnt)
	if err != nil {
		t.Fatal(err)
	}
	if len(mntAfter) != len(mntBefore) {
		t.Fatalf("the mount lists %d names, before %d", len(mntAfter), len(mntBefore))
	}
	st := lstat(t, d.path("keep/dev"))
	if st.Mode&0o7777 != 0o640 || st.Uid != 0 {
		t.Fatalf("keep/dev changed: mode %o uid %d", st.Mode, st.Uid)
	}
}

// devfsd ctl: the commands a script uses, with their exit statuses.
func TestControlCtlCommands(t *testing.T) {
	d := startCtl(t)
	if out := d.mustCtl(t, "register", "/ctl/tun", "char", "10", "200", "--mode=0666"); !strings.Contains(out, "10:200") {
		t.Errorf("register printed %q", out)
	}
	d.mustCtl(t, "register", "ctl/link", "symlink", "tun")
	if _, _, code := d.ctl(t, nil, "register", "ctl/tun", "char", "10", "200"); code != 4 {
		t.Errorf("register of a taken name: exit %d, want 4", code)
	}
	if out := d.mustCtl(t, "ls", "ctl"); !strings.Contains(out, "ctl/link -> tun") || !strings.Contains(out, "ctl/tun") {
		t.Errorf("ls printed %q", out)
	}
	d.mustCtl(t, "chown", "5:6", "ctl/tun")
	out := d.mustCtl(t, "stat", "--json", "ctl/tun")
	var n wire.Node
	if err := json.Unmarshal([]byte(out), &n); err != nil || n.Uid != 5 || n.Gid != 6 || n.Mode != "0666" {
		t.Errorf("stat --json: %q (%v)", out, err)
	}
	if st := lstat(t, d.path("ctl/tun")); st.Uid != 5 || st.Gid != 6 {
		t.Errorf("the mount shows %d:%d after chown", st.Uid, st.Gid)
	}
	if _, _, code := d.ctl(t, nil, "stat", "ctl/nope"); code != 3 {
		t.Errorf("stat of a missing name: exit %d, want 3", code)
	}
	if _, errOut, code := d.ctl(t, nil, "wait", "--timeout=200ms", "never"); code != 6 || !strings.Contains(errOut, "timeout") {
		t.Errorf("wait for a name that never comes: exit %d %q, want 6", code, errOut)
	}
	if out, errOut, code := d.ctl(t, nil, "reload"); code != 0 || !strings.Contains(out, "nothing changed") {
		t.Errorf("reload of an unchanged configuration: exit %d %q %q, want 0 and nothing changed", code, out, errOut)
	}
	if _, _, code := d.ctl(t, nil, "bogus"); code != 2 {
		t.Errorf("unknown command: exit %d, want 2", code)
	}
	if _, _, code := d.ctl(t, nil, "--socket="+filepath.Join(t.TempDir(), "none.sock"), "stats"); code != 7 {
		t.Errorf("no daemon: exit %d, want 7", code)
	}
	// wait returns once the name appears.
	w := exec.Command(devfsdBin, "ctl", "--socket="+d.sock, "wait", "--timeout=20s", "late/comer")
	w.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	var wout bytes.Buffer
	w.Stdout = &wout
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // a failure before w.Wait below leaves it running
		if w.ProcessState == nil {
			w.Process.Kill()
			w.Wait()
		}
	})
	until(t, "the wait subscribed", func() bool { return subscribers(d) == 1 })
	d.mustCtl(t, "register", "late/comer", "fifo")
	if err := w.Wait(); err != nil || !strings.Contains(wout.String(), "late/comer") {
		t.Fatalf("wait: %v %q", err, wout.String())
	}
	if _, err := os.Lstat(d.path("late/comer")); err != nil {
		t.Fatalf("after wait, the mount: %v", err)
	}
	d.mustCtl(t, "unregister", "ctl")
	if _, err := os.Lstat(d.path("ctl")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("after unregister, the mount: %v", err)
	}
}

// The socket is 0600 and root's, a stale socket file is replaced, a live
// one is not (the second daemon refuses to start), and a clean stop
// removes it.
func TestControlSocketLifecycle(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	// A stale socket: bound, never unlinked, nobody listening.
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	d := start(t, opts{args: []string{"--socket=" + sock}})
	var st unix.Stat_t
	if err := unix.Lstat(sock, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || st.Mode&0o777 != 0o600 || st.Uid != 0 {
		t.Fatalf("socket mode %o uid %d", st.Mode, st.Uid)
	}
	c := client.New(sock)
	defer c.Close()
	if _, err := c.Stats(context.Background()); err != nil {
		t.Fatalf("the daemon on a replaced stale socket: %v", err)
	}
	// A second daemon on the live socket refuses to start, before mounting.
	mnt2 := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
	defer cancel()
	out, err := exec.CommandContext(ctx, devfsdBin, "mount", "--socket="+sock, mnt2).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), "another process answers on the socket") {
		t.Fatalf("second daemon on a live socket: %v\n%s", err, out)
	}
	if mounted(t, mnt2) {
		t.Fatal("the refused daemon mounted")
	}
	if _, err := c.Stats(context.Background()); err != nil {
		t.Fatalf("the first daemon after the refused one: %v", err)
	}
	d.stop()
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket after a clean stop: %v", err)
	}
}
