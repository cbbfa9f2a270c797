package control

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/fs/viewpath"
)

func TestDecodeView(t *testing.T) {
	for _, tt := range []struct {
		name, body, code, field string
	}{
		{"full", `{"mountpoint":"/srv/c1/dev","allow":["snd/*","null"],"deny":["snd/seq"],"overrides":[{"glob":"snd/*","mode":"0666","uid":0,"gid":29}]}`, "", ""},
		{"mountpoint only", `{"mountpoint":"/srv/c1/dev"}`, "", ""},
		{"no mountpoint", `{"allow":["x"]}`, wire.CodeMissingField, "mountpoint"},
		{"relative mountpoint", `{"mountpoint":"srv/dev"}`, wire.CodeInvalidMountpoint, "mountpoint"},
		{"unclean mountpoint", `{"mountpoint":"/srv/../dev"}`, wire.CodeInvalidMountpoint, "mountpoint"},
		{"trailing slash", `{"mountpoint":"/srv/dev/"}`, wire.CodeInvalidMountpoint, "mountpoint"},
		{"root", `{"mountpoint":"/"}`, wire.CodeInvalidMountpoint, "mountpoint"},
		{"unknown field", `{"mountpoint":"/d","color":"red"}`, wire.CodeUnknownField, "color"},
		{"allow a string", `{"mountpoint":"/d","allow":"snd/*"}`, wire.CodeBadType, "allow"},
		{"allow of numbers", `{"mountpoint":"/d","allow":["a",5]}`, wire.CodeBadType, "allow[1]"},
		{"deny null", `{"mountpoint":"/d","deny":null}`, wire.CodeBadType, "deny"},
		{"override not an object", `{"mountpoint":"/d","overrides":["x"]}`, wire.CodeBadType, "overrides[0]"},
		{"override unknown field", `{"mountpoint":"/d","overrides":[{"glob":"x","mode":"0600","owner":1}]}`, wire.CodeUnknownField, "overrides[0].owner"},
		{"override without glob", `{"mountpoint":"/d","overrides":[{"mode":"0600"}]}`, wire.CodeMissingField, "overrides[0].glob"},
		{"override setting nothing", `{"mountpoint":"/d","overrides":[{"glob":"x"}]}`, wire.CodeMissingField, "overrides[0]"},
		{"override mode a number", `{"mountpoint":"/d","overrides":[{"glob":"x","mode":438}]}`, wire.CodeBadType, "overrides[0].mode"},
		{"override mode not octal", `{"mountpoint":"/d","overrides":[{"glob":"x","mode":"0999"}]}`, wire.CodeInvalidMode, "overrides[0].mode"},
		{"override uid out of range", `{"mountpoint":"/d","overrides":[{"glob":"x","uid":-1}]}`, wire.CodeInvalidOwner, "overrides[0].uid"},
		{"bad pattern", `{"mountpoint":"/d","allow":["ok","snd/**"]}`, wire.CodeInvalidArgument, "allow[1]"},
		{"absolute pattern", `{"mountpoint":"/d","deny":["/snd"]}`, wire.CodeInvalidArgument, "deny[0]"},
		{"bad override glob", `{"mountpoint":"/d","overrides":[{"glob":"[","mode":"0600"}]}`, wire.CodeInvalidArgument, "overrides[0].glob"},
		{"pattern as bytes", `{"mountpoint":"/d","allow":[[97,255]]}`, "", ""},
		{"pattern not UTF-8", "{\"mountpoint\":\"/d\",\"allow\":[\"a\xff\"]}", wire.CodeInvalidUTF8, "allow[0]"},
	} {
		v, _, e := decodeView([]byte(tt.body))
		code, field := "", ""
		if e != nil {
			code, field = e.body.Code, e.body.Field
		}
		if code != tt.code || field != tt.field {
			t.Errorf("%s: %+v, error %v (field %q), want %q on %q", tt.name, v, e, field, tt.code, tt.field)
		}
	}
	v, view, e := decodeView([]byte(`{"mountpoint":"/d","allow":["x"],"overrides":[{"glob":"x","mode":"666","gid":5}]}`))
	if e != nil || v.Overrides[0].Mode != "0666" || v.Overrides[0].Uid != nil || *v.Overrides[0].Gid != 5 {
		t.Fatalf("decoded %+v %v", v, e)
	}
	// The compiled view is the one the request describes.
	a, ok := view.Override([]string{"x"})
	if view.VerdictPath("x") != viewpath.Shown || view.VerdictPath("y") != viewpath.Hidden ||
		!ok || a != (viewpath.Attrs{Mode: 0o666, Gid: 5, SetMode: true, SetGid: true}) {
		t.Fatalf("compiled view: %v %v %+v", view.VerdictPath("x"), view.VerdictPath("y"), a)
	}
}

// fakeViews records what the endpoints hand it.
type fakeViews struct {
	mu    sync.Mutex
	added []wire.View
}

func (f *fakeViews) AddView(ctx context.Context, v wire.View, view *viewpath.View) (wire.ViewInfo, error) {
	if view == nil {
		return wire.ViewInfo{}, fmt.Errorf("no compiled view")
	}
	if v.Mountpoint == "/taken" {
		return wire.ViewInfo{}, NewError(http.StatusConflict, wire.CodeExists, "mountpoint", "taken")
	}
	f.mu.Lock()
	f.added = append(f.added, v)
	f.mu.Unlock()
	return wire.ViewInfo{View: v}, nil
}

func (f *fakeViews) RemoveView(ctx context.Context, mp string) error {
	return NewError(http.StatusNotFound, wire.CodeNotFound, "mountpoint", "no view at %s", mp)
}

func (f *fakeViews) ListViews() []wire.ViewInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []wire.ViewInfo
	for _, v := range f.added {
		out = append(out, wire.ViewInfo{View: v})
	}
	return out
}

// The view endpoints over a real socket: errors keep their code, a
// daemon without views says not_supported.
func TestViewEndpoints(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	fv := &fakeViews{}
	s, err := Listen(Options{Path: sock, Namespace: dcache.New(dcache.Options{}), Hub: NewHub(nil),
		WriteUID: -1, WriteGID: -1, Views: fv})
	if err != nil {
		t.Fatal(err)
	}
	s.Serve()
	defer s.Shutdown(context.Background())
	c := client.New(sock)
	defer c.Close()
	ctx := context.Background()
	if _, err := c.AddView(ctx, wire.View{Mountpoint: "/srv/a", Allow: []string{"snd/*"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddView(ctx, wire.View{Mountpoint: "/taken"}); client.Code(err) != wire.CodeExists {
		t.Fatalf("add at a taken mountpoint: %v", err)
	}
	if _, err := c.AddView(ctx, wire.View{Mountpoint: "rel"}); client.Code(err) != wire.CodeInvalidMountpoint {
		t.Fatalf("add at a relative mountpoint: %v", err)
	}
	if err := c.RemoveView(ctx, "/srv/b"); client.Code(err) != wire.CodeNotFound {
		t.Fatalf("remove of no view: %v", err)
	}
	vs, err := c.Views(ctx)
	if err != nil || len(vs) != 1 || fmt.Sprint(vs[0].Allow) != "[snd/*]" {
		t.Fatalf("views %+v %v", vs, err)
	}

	sock2 := filepath.Join(t.TempDir(), "s2.sock")
	s2, err := Listen(Options{Path: sock2, Namespace: dcache.New(dcache.Options{}), Hub: NewHub(nil), WriteUID: -1, WriteGID: -1})
	if err != nil {
		t.Fatal(err)
	}
	s2.Serve()
	defer s2.Shutdown(context.Background())
	if _, err := client.New(sock2).Views(ctx); client.Code(err) != wire.CodeNotSupported {
		t.Fatalf("views of a daemon without: %v", err)
	}
}
