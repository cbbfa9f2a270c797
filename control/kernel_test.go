package control

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
)

type fakeKernel struct {
	devs     map[string]wire.DeviceInfo
	rescans  atomic.Int64
	rescanOK bool
}

func (f *fakeKernel) Info(p string) (wire.DeviceInfo, bool) {
	i, ok := f.devs[p]
	return i, ok
}

func (f *fakeKernel) Trigger(context.Context) (wire.Trigger, error) {
	n := f.rescans.Add(1)
	if !f.rescanOK {
		return wire.Trigger{}, errors.New("sysfs unreadable")
	}
	return wire.Trigger{Devices: len(f.devs), Registered: len(f.devs), Rescans: uint64(n)}, nil
}

func kernelServer(t *testing.T, k Kernel) func(c Cred, method, target, body string) (int, []byte) {
	t.Helper()
	ns := dcache.New(dcache.Options{})
	s, err := Listen(Options{Path: filepath.Join(t.TempDir(), "s.sock"), Namespace: ns, Hub: NewHub(nil),
		WriteUID: 1500, WriteGID: -1, Kernel: k})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return func(c Cred, method, target, body string) (int, []byte) {
		r := httptest.NewRequest(method, "http://devfsd"+target, strings.NewReader(body))
		r = r.WithContext(context.WithValue(r.Context(), credKey{}, c))
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		return w.Code, w.Body.Bytes()
	}
}

func errCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" {
		t.Fatalf("not an error answer: %s (%v)", body, err)
	}
	return e.Error.Code
}

var (
	kRoot   = Cred{Caller: dcache.Caller{Pid: 10, Uid: 0, Gid: 0}, OK: true}
	kUser   = Cred{Caller: dcache.Caller{Pid: 11, Uid: 1000, Gid: 1000}, OK: true}
	kWriter = Cred{Caller: dcache.Caller{Pid: 12, Uid: 1500, Gid: 1500}, OK: true}
)

func TestInfo(t *testing.T) {
	fk := &fakeKernel{devs: map[string]wire.DeviceInfo{"loop7": {Path: "loop7", Type: "block", Major: 7, Minor: 7,
		DevPath: "/devices/virtual/block/loop7", Subsystem: "block", Registered: true,
		Env: map[string]string{"MAJOR": "7", "MINOR": "7", "DEVNAME": "loop7"}}}}
	do := kernelServer(t, fk)
	st, body := do(kUser, "GET", "/v1/info?path=loop7", "")
	if st != 200 {
		t.Fatalf("info loop7: %d %s", st, body)
	}
	var got wire.DeviceInfo
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if got.Path != "loop7" || got.Type != "block" || got.Major != 7 || got.Subsystem != "block" ||
		got.DevPath != "/devices/virtual/block/loop7" || got.Env["DEVNAME"] != "loop7" || !got.Registered {
		t.Errorf("info loop7 = %+v", got)
	}
	for _, tt := range []struct {
		target string
		status int
		code   string
	}{
		{"/v1/info?path=nope", 404, wire.CodeNotFound},
		{"/v1/info", 400, wire.CodeMissingField},
		{"/v1/info?path=a/../b", 400, wire.CodeInvalidPath},
		{"/v1/info?path=loop7&x=1", 400, wire.CodeUnknownField},
	} {
		st, body := do(kUser, "GET", tt.target, "")
		if st != tt.status || errCode(t, body) != tt.code {
			t.Errorf("GET %s: %d %s, want %d %s", tt.target, st, body, tt.status, tt.code)
		}
	}
	if st, _ := do(kUser, "POST", "/v1/info?path=loop7", ""); st != 405 {
		t.Errorf("POST /v1/info: %d, want 405", st)
	}
}

func TestTrigger(t *testing.T) {
	fk := &fakeKernel{devs: map[string]wire.DeviceInfo{"null": {}}, rescanOK: true}
	do := kernelServer(t, fk)
	st, body := do(kUser, "POST", "/v1/trigger", "{}")
	if st != 403 || errCode(t, body) != wire.CodePermission || fk.rescans.Load() != 0 {
		t.Fatalf("trigger by a user: %d %s, %d rescans; want 403 and none", st, body, fk.rescans.Load())
	}
	if st, body := do(kRoot, "POST", "/v1/trigger", `{"x":1}`); st != 400 || errCode(t, body) != wire.CodeUnknownField || fk.rescans.Load() != 0 {
		t.Fatalf("trigger with a field: %d %s, %d rescans", st, body, fk.rescans.Load())
	}
	for i, c := range []Cred{kRoot, kWriter} {
		st, body := do(c, "POST", "/v1/trigger", "")
		if st != 200 {
			t.Fatalf("trigger by uid %d: %d %s", c.Uid, st, body)
		}
		var got wire.Trigger
		if err := json.Unmarshal(body, &got); err != nil || got.Devices != 1 || got.Rescans != uint64(i+1) {
			t.Errorf("trigger by uid %d = %s (%v)", c.Uid, body, err)
		}
	}
	if st, _ := do(kRoot, "GET", "/v1/trigger", ""); st != 405 {
		t.Errorf("GET /v1/trigger: %d, want 405", st)
	}
	fk.rescanOK = false
	if st, body := do(kRoot, "POST", "/v1/trigger", ""); st != 500 || errCode(t, body) != wire.CodeInternal {
		t.Errorf("a failed rescan: %d %s, want 500 internal", st, body)
	}
}

// Without the kernel source, info finds no device and trigger is not
// supported.
func TestKernelAbsent(t *testing.T) {
	do := kernelServer(t, nil)
	if st, body := do(kUser, "GET", "/v1/info?path=null", ""); st != 404 || errCode(t, body) != wire.CodeNotFound {
		t.Errorf("info: %d %s, want 404 not_found", st, body)
	}
	if st, body := do(kRoot, "POST", "/v1/trigger", ""); st != 409 || errCode(t, body) != wire.CodeNotSupported {
		t.Errorf("trigger: %d %s, want 409 not_supported", st, body)
	}
}
