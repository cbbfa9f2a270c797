package control

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
)

// POST /v1/upgrade is root's, checks its binary before anything is
// started, and answers what Options.Upgrade says.
func TestUpgradeEndpoint(t *testing.T) {
	var asked []string
	fail := false
	up := func(ctx context.Context, binary string) (wire.Upgrade, error) {
		asked = append(asked, binary)
		if fail {
			return wire.Upgrade{}, errors.New("the successor exited")
		}
		return wire.Upgrade{OldPid: 1, NewPid: 2, Binary: binary, Mounts: 1}, nil
	}
	dir := t.TempDir()
	exe := filepath.Join(dir, "devfsd")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Listen(Options{Path: filepath.Join(dir, "s.sock"), Namespace: dcache.New(dcache.Options{}), Hub: NewHub(nil),
		WriteUID: 1000, WriteGID: -1, Upgrade: up})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	root := Cred{Caller: dcache.Caller{Pid: 10}, OK: true}
	writer := Cred{Caller: dcache.Caller{Pid: 11, Uid: 1000, Gid: 1000}, OK: true}
	do := func(c Cred, body string) (int, string) {
		r := httptest.NewRequest(http.MethodPost, "http://devfsd/v1/upgrade", strings.NewReader(body))
		r = r.WithContext(context.WithValue(r.Context(), credKey{}, c))
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w.Code, w.Body.String()
	}
	for _, tt := range []struct {
		name   string
		c      Cred
		body   string
		fail   bool
		status int
		want   string // in the body
	}{
		{"a writer is not root", writer, ``, false, 403, wire.CodePermission},
		{"relative binary", root, `{"binary":"devfsd"}`, false, 400, "absolute"},
		{"unclean binary", root, `{"binary":"` + dir + `/../x"}`, false, 400, "absolute, clean"},
		{"missing binary", root, `{"binary":"` + dir + `/nope"}`, false, 400, "no such file"},
		{"not executable", root, `{"binary":"` + plain + `"}`, false, 400, "not an executable"},
		{"unknown field", root, `{"bin":"x"}`, false, 400, "bin"},
		{"the running binary", root, ``, false, 200, `"new_pid":2`},
		{"another binary", root, `{"binary":"` + exe + `"}`, false, 200, exe},
		{"the successor fails", root, `{}`, true, 500, "the successor exited"},
	} {
		fail = tt.fail
		n := len(asked)
		code, body := do(tt.c, tt.body)
		if code != tt.status || !strings.Contains(body, tt.want) {
			t.Errorf("%s: %d %s; want %d with %q", tt.name, code, body, tt.status, tt.want)
		}
		if started := len(asked) > n; started != (tt.status == 200 || tt.status == 500) {
			t.Errorf("%s: Upgrade called: %v", tt.name, started)
		}
	}
	if asked[0] != "" || asked[1] != exe {
		t.Errorf("binaries asked for: %q", asked)
	}
}

// Handover keeps the socket: a connection made after it waits in the
// socket and is answered by a server made of the handed-over listener.
func TestHandoverKeepsTheSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	opts := Options{Path: path, Namespace: dcache.New(dcache.Options{}), Hub: NewHub(nil), WriteUID: -1, WriteGID: -1}
	s1, err := Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	s1.Serve()
	f, done, err := s1.Handover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the server handed over did not finish")
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the socket file after the handover: %v", err)
	}
	if _, _, err := s1.Handover(context.Background()); err == nil {
		t.Fatal("a second Handover succeeded")
	}
	c, err := net.Dial("unix", path) // waits in the backlog
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	opts.Listener = ln.(*net.UnixListener)
	s2, err := Listen(opts)
	if err != nil {
		t.Fatal(err)
	}
	s2.Serve()
	defer s2.Shutdown(context.Background())
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET /v1/stat?path= HTTP/1.1\r\nHost: devfsd\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatalf("answer through the handed-over socket: %q, %v", buf[:n], err)
	}
	s2.Shutdown(context.Background())
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("the socket file after the successor's Shutdown: %v", err)
	}
}
