package integration

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/control/wire"
)

// rawAnswer sends one request over the socket and returns the status and
// the body as bytes.
func rawAnswer(t *testing.T, sock, method, target, body string) (int, []byte) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://devfsd"+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// A name that JSON cannot carry exactly is refused with invalid_utf8 and
// changes nothing, in every request that takes a name; never registered
// as something else (U+FFFD). The bytes go through as an array.
func TestControlNameNotUTF8IsRefused(t *testing.T) {
	d := startCtl(t)
	d.mustCtl(t, "register", "keep", "char", "1", "3")
	before := tree(t, d)
	for _, tt := range []struct{ name, target, body string }{
		{"register", "/v1/register", "{\"path\":\"bad\xff\xfe\",\"type\":\"dir\"}"},
		{"register a lone surrogate", "/v1/register", `{"path":"bad\ud800","type":"dir"}`},
		{"register a target", "/v1/register", "{\"path\":\"lnk\",\"type\":\"symlink\",\"target\":\"t\xff\"}"},
		{"unregister", "/v1/unregister", "{\"path\":\"kee\xff\"}"},
		{"chmod", "/v1/chmod", "{\"path\":\"keep\xfe\",\"mode\":\"0666\"}"},
		{"chown", "/v1/chown", `{"path":"keep\udfff","uid":5}`},
		{"views/add", "/v1/views/add", "{\"mountpoint\":\"/tmp/v\xff\"}"},
		{"views/add pattern", "/v1/views/add", "{\"mountpoint\":\"/tmp/v\",\"allow\":[\"a\xff\"]}"},
		{"views/remove", "/v1/views/remove", "{\"mountpoint\":\"/tmp/v\xff\"}"},
		{"helper/done", "/v1/helper/done", "{\"id\":1,\"error\":\"\xff\"}"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, b := rawAnswer(t, d.sock, "POST", tt.target, tt.body)
			var eb wire.ErrorBody
			if err := json.Unmarshal(b, &eb); err != nil {
				t.Fatalf("answer %s: %v", b, err)
			}
			want := wire.CodeInvalidUTF8
			if tt.name == "helper/done" {
				want = wire.CodeNotHelper // who asks is judged first
			}
			if status != 400 && want == wire.CodeInvalidUTF8 || eb.Error.Code != want {
				t.Fatalf("answered %d %s, want 400 %s", status, b, want)
			}
		})
	}
	if after := tree(t, d); after != before {
		t.Fatalf("the tree changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if names := readdirNames(t, d.mnt); strings.Contains(strings.Join(names, "\n"), "\uFFFD") {
		t.Fatalf("a name was rewritten to U+FFFD: %q", names)
	}

	// As an array of bytes the name is carried exactly: registered, seen
	// through the mount, listed, and removed.
	status, b := rawAnswer(t, d.sock, "POST", "/v1/register", `{"path":[117,255,254],"type":"char","major":1,"minor":3}`)
	if status != 201 || !strings.Contains(string(b), `"path":[117,255,254]`) {
		t.Fatalf("register of bytes: %d %s", status, b)
	}
	if err := unix.Lstat(d.path("u\xff\xfe"), new(unix.Stat_t)); err != nil {
		t.Fatalf("the name through the mount: %v", err)
	}
	if status, b := rawAnswer(t, d.sock, "GET", "/v1/stat?path=u%FF%FE", ""); status != 200 || !strings.Contains(string(b), `"path":[117,255,254]`) {
		t.Fatalf("stat of the name percent-encoded: %d %s", status, b)
	}
	if status, b := rawAnswer(t, d.sock, "GET", "/v1/wait?path=u%FF%FE&timeout=1s", ""); status != 200 || !strings.Contains(string(b), `"path":[117,255,254]`) {
		t.Fatalf("wait for the name percent-encoded: %d %s", status, b)
	}
	if status, b := rawAnswer(t, d.sock, "GET", "/v1/list?path=u%FF%FE", ""); status != 200 || !strings.Contains(string(b), `{"path":[117,255,254],"nodes":[{`) {
		t.Fatalf("list of the name percent-encoded: %d %s", status, b)
	}
	if status, b := rawAnswer(t, d.sock, "POST", "/v1/unregister", `{"path":[117,255,254]}`); status != 200 {
		t.Fatalf("unregister of bytes: %d %s", status, b)
	}
	if err := unix.Lstat(d.path("u\xff\xfe"), new(unix.Stat_t)); err != unix.ENOENT {
		t.Fatalf("the name after unregister: %v", err)
	}
}

func readdirNames(t *testing.T, dir string) []string {
	t.Helper()
	names, _ := readdirRaw(t, dir)
	return names
}

// Names made through the mount that are not UTF-8 are listed and streamed
// as arrays of their bytes, never as U+FFFD; the Go client reads them back
// exactly.
func TestControlNameNotUTF8IsListedExactly(t *testing.T) {
	d := startCtl(t)
	ctx, cancel := context.WithTimeout(context.Background(), condDeadline)
	defer cancel()
	ev, err := d.c.Events(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer ev.Close()
	until(t, "the event stream to open", func() bool { return subscribers(d) == 1 })

	const name = "m\xff\xfe"
	if err := unix.Mkdir(d.path("dir\xc3"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(d.path("dir\xc3/"+name), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Symlink("/t\x80", d.path("lnk")); err != nil {
		t.Fatal(err)
	}

	status, b := rawAnswer(t, d.sock, "GET", "/v1/list?recursive=true", "")
	if status != 200 || strings.Contains(string(b), `\ufffd`) || strings.Contains(string(b), "\uFFFD") {
		t.Fatalf("list: %d %s", status, b)
	}
	for _, want := range []string{`"path":[100,105,114,195]`, `"path":[100,105,114,195,47,109,255,254]`, `"target":[47,116,128]`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("list lacks %s: %s", want, b)
		}
	}
	l, err := d.c.List(ctx, "dir\xc3", false)
	if err != nil || len(l.Nodes) != 1 || l.Path != "dir\xc3" || l.Nodes[0].Path != "dir\xc3/"+name {
		t.Fatalf("client list: %+v %v", l, err)
	}

	// The CREATE events, in order: the directory, the device, the symlink.
	want := []string{`"path":[100,105,114,195]`, `"path":[100,105,114,195,47,109,255,254]`, `"path":"lnk"`}
	deadline := time.Now().Add(condDeadline)
	for len(want) > 0 && time.Now().Before(deadline) {
		rec, err := ev.Next()
		if err != nil {
			t.Fatal(err)
		}
		if rec.Kind != "CREATE" {
			continue
		}
		raw := string(ev.Raw())
		if !strings.Contains(raw, want[0]) || strings.Contains(raw, `\ufffd`) {
			t.Fatalf("event %s, want %s", raw, want[0])
		}
		if len(want) == 2 && rec.Path != "dir\xc3/"+name {
			t.Fatalf("the client read the event's path as %q", rec.Path)
		}
		want = want[1:]
	}
	if len(want) > 0 {
		t.Fatalf("events missing: %v", want)
	}
}
