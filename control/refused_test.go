package control

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/devfsd/devfsd/audit"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
)

type fakeAudit struct {
	mu   sync.Mutex
	list []audit.Refusal
}

func (f *fakeAudit) Refused(r audit.Refusal) {
	f.mu.Lock()
	f.list = append(f.list, r)
	f.mu.Unlock()
}

func (f *fakeAudit) take() []audit.Refusal {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.list
	f.list = nil
	return l
}

// Every refused change is audited with who asked, the endpoint, what it
// would have changed and why; reads, unknown endpoints and changes that
// succeed are not.
func TestRefusedChangesAreAudited(t *testing.T) {
	fa := &fakeAudit{}
	ns := dcache.New(dcache.Options{})
	s, err := Listen(Options{Path: filepath.Join(t.TempDir(), "s.sock"), Namespace: ns, Hub: NewHub(nil),
		WriteUID: -1, WriteGID: -1, Audit: fa})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	root := Cred{Caller: dcache.Caller{Pid: 10, Uid: 0, Gid: 0}, OK: true}
	user := Cred{Caller: dcache.Caller{Pid: 11, Uid: 1000, Gid: 1000}, OK: true}
	do := func(c Cred, method, target, body string) int {
		r := httptest.NewRequest(method, "http://devfsd"+target, strings.NewReader(body))
		r = r.WithContext(context.WithValue(r.Context(), credKey{}, c))
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w.Code
	}
	for _, tt := range []struct {
		name        string
		c           Cred
		method, url string
		body        string
		status      int
		code, path  string // the refusal audited; code "": none
	}{
		{"not a writer", user, "POST", "/v1/register", `{"path":"evil","type":"dir"}`, 403, wire.CodePermission, "evil"},
		{"not a writer, unregister", user, "POST", "/v1/unregister", `{"path":[101,255]}`, 403, wire.CodePermission, "e\xff"},
		{"not a writer, reload", user, "POST", "/v1/reload", ``, 403, wire.CodePermission, ""},
		{"not a writer, attach", user, "GET", "/v1/helper", ``, 403, wire.CodePermission, ""},
		{"not root, views", user, "POST", "/v1/views/add", `{"mountpoint":"/etc"}`, 403, wire.CodePermission, "/etc"},
		{"bad path", root, "POST", "/v1/register", `{"path":"a/../b","type":"dir"}`, 400, wire.CodeInvalidPath, "a/../b"},
		{"not UTF-8", root, "POST", "/v1/register", "{\"path\":\"x\xff\",\"type\":\"dir\"}", 400, wire.CodeInvalidUTF8, "x\xff"},
		{"bad JSON", root, "POST", "/v1/chmod", `{"path":`, 400, wire.CodeBadJSON, ""},
		{"too large", root, "POST", "/v1/register", `{"path":"` + strings.Repeat("a", MaxBody) + `"}`, 413, wire.CodeBodyTooLarge, ""},
		{"missing", root, "POST", "/v1/unregister", `{"path":"nope"}`, 404, wire.CodeNotFound, "nope"},
		{"done from a non-helper", user, "POST", "/v1/helper/done", `{"id":1}`, 501, "", ""},
		{"registered", root, "POST", "/v1/register", `{"path":"ok","type":"dir"}`, 201, "", ""},
		{"exists", root, "POST", "/v1/register", `{"path":"ok","type":"dir"}`, 409, wire.CodeExists, "ok"},
		{"a read", user, "GET", "/v1/stat?path=nope", ``, 404, "", ""},
		{"a bad read", user, "GET", "/v1/list?path=..", ``, 400, "", ""},
		{"unknown endpoint", user, "POST", "/v1/frobnicate", `{}`, 404, "", ""},
		{"wrong method", user, "GET", "/v1/register", ``, 405, "", ""},
	} {
		if got := do(tt.c, tt.method, tt.url, tt.body); got != tt.status {
			t.Errorf("%s: status %d, want %d", tt.name, got, tt.status)
		}
		got := fa.take()
		if tt.code == "" {
			if len(got) != 0 {
				t.Errorf("%s: audited %+v", tt.name, got)
			}
			continue
		}
		if len(got) != 1 {
			t.Errorf("%s: %d refusals audited, want 1", tt.name, len(got))
			continue
		}
		r := got[0]
		if r.Pid != tt.c.Pid || r.Uid != tt.c.Uid || r.Gid != tt.c.Gid || r.Endpoint != tt.url ||
			r.Path != tt.path || r.Code != tt.code || r.Why == "" {
			t.Errorf("%s: audited %+v, want code %s path %q", tt.name, r, tt.code, tt.path)
		}
	}
	if _, err := ns.Resolve("evil"); err == nil {
		t.Fatal("a refused register made its node")
	}
}
