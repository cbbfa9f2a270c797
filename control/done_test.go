package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload/helper"
	"github.com/devfsd/devfsd/test/harness"
)

// helperRig is a control server with a helper loader, and this process
// attached to it as the helper through the socket.
type helperRig struct {
	ns     *dcache.Namespace
	hub    *Hub
	loader *helper.Loader
	srv    *Server
	c      *client.Client
	hs     *client.HelperStream
	events *Subscription // every event, for origin checks
	conns  atomic.Int64  // connections the server accepted
	idles  atomic.Int64  // times a connection went idle (a response written, waiting for the next request)
}

func newHelperRig(tb testing.TB, maxNodes int64) *helperRig {
	tb.Helper()
	hub := NewHub(nil)
	ns := dcache.New(dcache.Options{Sink: hub, MaxNodes: maxNodes})
	r := &helperRig{ns: ns, hub: hub, loader: helper.New(nil)}
	srv, err := Listen(Options{Path: filepath.Join(tb.TempDir(), "s.sock"), Namespace: ns, Hub: hub,
		Helper: r.loader, WriteUID: -1, WriteGID: -1})
	if err != nil {
		tb.Fatal(err)
	}
	srv.http.connState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			r.conns.Add(1)
		case http.StateIdle:
			r.idles.Add(1)
		}
	}
	srv.Serve()
	r.srv = srv
	r.c = client.New(srv.Path())
	r.events = hub.Subscribe(1<<16, nil)
	hs, err := r.c.AttachHelper(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	r.hs = hs
	tb.Cleanup(func() {
		hs.Close()
		r.events.Close()
		r.c.Close()
		srv.Shutdown(context.Background())
	})
	return r
}

// miss starts a Load of name, as package lookup does for a miss, and
// returns the LOOKUP record the helper reads and the Load's result.
func (r *helperRig) miss(tb testing.TB, name string) (wire.Record, <-chan error) {
	tb.Helper()
	res := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res <- r.loader.Load(ctx, "", name, dcache.Caller{Pid: 1})
	}()
	for {
		rec, err := r.hs.Next()
		if err != nil {
			tb.Fatalf("helper stream: %v", err)
		}
		if rec.Type == "lookup" {
			if rec.Path != name {
				tb.Fatalf("LOOKUP of %q, want %q", rec.Path, name)
			}
			return rec, res
		}
	}
}

func dev(path string, major, minor int64) wire.RegisterRequest {
	return wire.RegisterRequest{Path: path, Type: "char", Mode: "0660", Major: &major, Minor: &minor}
}

func released(tb testing.TB, res <-chan error) error {
	tb.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(20 * time.Second):
		tb.Fatal("the lookup was not released")
		return nil
	}
}

func pending(res <-chan error) bool {
	select {
	case <-res:
		return false
	default:
		return true
	}
}

// The one-request form registers every node, in order, with the loader's
// origin, and only then releases the lookup.
func TestDoneWithRegistrationsReleasesAfterRegistering(t *testing.T) {
	r := newHelperRig(t, 0)
	rec, res := r.miss(t, "snd")
	target := "timer"
	ans, err := r.hs.Answer(context.Background(), wire.DoneRequest{ID: rec.ID, Register: []wire.RegisterRequest{
		{Path: "snd", Type: "dir", Mode: "0750"},
		dev("snd/timer", 116, 33),
		{Path: "snd/alias", Type: "symlink", Target: &target},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := released(t, res); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if ans.ID != rec.ID || len(ans.Registered) != 3 || ans.Registered[1].Path != "snd/timer" ||
		ans.Registered[1].Major != 116 || ans.Registered[0].Mode != "0750" || ans.Late || len(ans.Existing) != 0 {
		t.Fatalf("answer %+v", ans)
	}
	for _, p := range []string{"snd", "snd/timer", "snd/alias"} {
		if _, err := r.ns.Resolve(p); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	items, _ := r.events.Take()
	var regs []string
	for _, it := range items {
		if it.ev.Kind == dcache.KindRegister {
			regs = append(regs, it.ev.Path)
			if it.ev.Caller.Origin != dcache.OriginLoader {
				t.Errorf("REGISTER %s origin %v, want loader", it.ev.Path, it.ev.Caller.Origin)
			}
		}
	}
	if strings.Join(regs, " ") != "snd snd/timer snd/alias" {
		t.Fatalf("REGISTER events %v", regs)
	}
	if st := r.loader.Stats(); st.Answered != 1 || st.AnsweredRegistering != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// The two-request form (register, then done) still answers a lookup.
func TestDoneAfterRegisterStillWorks(t *testing.T) {
	r := newHelperRig(t, 0)
	rec, res := r.miss(t, "tun")
	if _, err := r.c.Register(context.Background(), dev("tun", 10, 200)); err != nil {
		t.Fatal(err)
	}
	if !pending(res) {
		t.Fatal("a register released the lookup before done")
	}
	if err := r.hs.Done(context.Background(), rec.ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := released(t, res); err != nil {
		t.Fatal(err)
	}
	if _, err := r.ns.Resolve("tun"); err != nil {
		t.Fatal(err)
	}
	// And a done with an empty register list is a plain done.
	rec, res = r.miss(t, "none")
	if _, err := r.hs.Answer(context.Background(), wire.DoneRequest{ID: rec.ID, Register: []wire.RegisterRequest{}, Error: "no module"}); err != nil {
		t.Fatal(err)
	}
	if err := released(t, res); err == nil || err.Error() != "no module" {
		t.Fatalf("Load: %v, want the helper's error", err)
	}
}

// A combined request with one bad registration is refused whole: a clear
// error naming it, nothing registered, no event, the lookup still
// pending — and answerable afterwards.
func TestDoneRefusesBadRegistrationsChangingNothing(t *testing.T) {
	r := newHelperRig(t, 0)
	if _, err := r.c.Register(context.Background(), dev("taken", 1, 3)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.Register(context.Background(), dev("file", 1, 5)); err != nil {
		t.Fatal(err)
	}
	good := dev("fresh/a", 1, 7)
	tooMany := make([]wire.RegisterRequest, wire.MaxDoneRegister+1)
	for i := range tooMany {
		tooMany[i] = dev(fmt.Sprintf("m%d", i), 1, 1)
	}
	rec, res := r.miss(t, "fresh")
	for _, tt := range []struct {
		name  string
		regs  []wire.RegisterRequest
		raw   string // a body instead of regs
		code  string
		field string
	}{
		{name: "no minor", regs: []wire.RegisterRequest{good, {Path: "fresh/b", Type: "char", Major: good.Major}},
			code: wire.CodeMissingField, field: "register[1].minor"},
		{name: "bad type", regs: []wire.RegisterRequest{good, {Path: "fresh/b", Type: "door"}},
			code: wire.CodeInvalidType, field: "register[1].type"},
		{name: "bad path", regs: []wire.RegisterRequest{{Path: "../x", Type: "dir"}, good},
			code: wire.CodeInvalidPath, field: "register[0].path"},
		{name: "taken", regs: []wire.RegisterRequest{good, dev("taken", 1, 3)},
			code: wire.CodeExists, field: "register[1].path"},
		{name: "parent is a device", regs: []wire.RegisterRequest{good, dev("file/x", 1, 3)},
			code: wire.CodeNotDir, field: "register[1].path"},
		{name: "parent is a listed device", regs: []wire.RegisterRequest{good, dev("fresh/a/x", 1, 3)},
			code: wire.CodeNotDir, field: "register[1].path"},
		{name: "directory after its child", regs: []wire.RegisterRequest{good, {Path: "fresh", Type: "dir"}},
			code: wire.CodeInvalidArgument, field: "register[0].path"},
		{name: "twice", regs: []wire.RegisterRequest{good, dev("fresh/b", 1, 1), good},
			code: wire.CodeInvalidArgument, field: "register[2].path"},
		{name: "too many", regs: tooMany, code: wire.CodeInvalidArgument, field: "register"},
		{name: "not an array", raw: fmt.Sprintf(`{"id":%d,"register":{"path":"fresh"}}`, rec.ID),
			code: wire.CodeBadType, field: "register"},
		{name: "unknown field in one", raw: fmt.Sprintf(`{"id":%d,"register":[{"path":"fresh","type":"dir","colour":1}]}`, rec.ID),
			code: wire.CodeUnknownField, field: "register[0].colour"},
		{name: "exist_ok not a boolean", raw: fmt.Sprintf(`{"id":%d,"exist_ok":1,"register":[]}`, rec.ID),
			code: wire.CodeBadType, field: "exist_ok"},
	} {
		before := r.ns.Statfs().Nodes
		seq := r.ns.LastSeq()
		var err error
		if tt.raw != "" {
			err = rawDone(r, tt.raw)
		} else {
			_, err = r.hs.Answer(context.Background(), wire.DoneRequest{ID: rec.ID, Register: tt.regs})
		}
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Code != tt.code || ce.Field != tt.field {
			t.Errorf("%s: %v, want %s on %s", tt.name, err, tt.code, tt.field)
			continue
		}
		if strings.HasPrefix(tt.field, "register[") && !strings.HasPrefix(ce.Message, strings.SplitN(tt.field, ".", 2)[0]+": ") {
			t.Errorf("%s: message %q does not name the registration", tt.name, ce.Message)
		}
		if n := r.ns.Statfs().Nodes; n != before || r.ns.LastSeq() != seq {
			t.Errorf("%s: nodes %d -> %d, seq %d -> %d: the refused request changed the namespace", tt.name, before, n, seq, r.ns.LastSeq())
		}
		if !pending(res) {
			t.Fatalf("%s: the refused request released the lookup", tt.name)
		}
	}
	if _, err := r.ns.Resolve("fresh"); err == nil {
		t.Fatal("fresh exists after refused requests")
	}
	// Answered properly, it goes through.
	if _, err := r.hs.Answer(context.Background(), wire.DoneRequest{ID: rec.ID, Register: []wire.RegisterRequest{good}}); err != nil {
		t.Fatal(err)
	}
	if err := released(t, res); err != nil {
		t.Fatal(err)
	}
}

// rawDone posts body to /v1/helper/done from this process and returns
// the error answer, if any, as the client reports one.
func rawDone(r *helperRig, body string) error {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", r.srv.Path())
	}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Post("http://devfsd/v1/helper/done", "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var eb wire.ErrorBody
	if resp.StatusCode < 300 {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
		return err
	}
	return &client.Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message, Field: eb.Error.Field}
}

// exist_ok skips taken names and registers the rest; no_space refuses a
// request that max_nodes cannot hold, before anything is made.
func TestDoneExistOKAndNoSpace(t *testing.T) {
	r := newHelperRig(t, 6) // root + 5
	if _, err := r.c.Register(context.Background(), dev("loop0", 7, 0)); err != nil {
		t.Fatal(err)
	}
	rec, res := r.miss(t, "loop1")
	loops := []wire.RegisterRequest{dev("loop0", 7, 0), dev("loop1", 7, 1), dev("loop2", 7, 2)}
	ans, err := r.hs.Answer(context.Background(), wire.DoneRequest{ID: rec.ID, ExistOK: true, Register: loops})
	if err != nil {
		t.Fatal(err)
	}
	if err := released(t, res); err != nil {
		t.Fatal(err)
	}
	if len(ans.Registered) != 2 || ans.Registered[0].Path != "loop1" || strings.Join(ans.Existing, ",") != "loop0" {
		t.Fatalf("answer %+v", ans)
	}
	// 4 nodes now; a/b and a/c make 3 more (a, a/b, a/c): over 6.
	rec, res = r.miss(t, "a")
	_, err = r.hs.Answer(context.Background(), wire.DoneRequest{ID: rec.ID, Register: []wire.RegisterRequest{dev("a/b", 1, 1), dev("a/c", 1, 1)}})
	if client.Code(err) != wire.CodeNoSpace {
		t.Fatalf("over max_nodes: %v", err)
	}
	if _, err := r.ns.Resolve("a"); err == nil || !pending(res) {
		t.Fatal("a refused request made a, or released the lookup")
	}
	// Two fit (a, a/b).
	if _, err := r.hs.Answer(context.Background(), wire.DoneRequest{ID: rec.ID, Register: []wire.RegisterRequest{dev("a/b", 1, 1)}}); err != nil {
		t.Fatal(err)
	}
	if err := released(t, res); err != nil {
		t.Fatal(err)
	}
}

// A done with registrations for a lookup that is not pending changes
// nothing: unknown_lookup, as the plain done.
func TestDoneForEndedLookupRegistersNothing(t *testing.T) {
	r := newHelperRig(t, 0)
	_, err := r.hs.Answer(context.Background(), wire.DoneRequest{ID: 12345, Register: []wire.RegisterRequest{dev("ghost", 1, 1)}})
	if client.Code(err) != wire.CodeUnknownLookup {
		t.Fatalf("done of an unknown id: %v", err)
	}
	if _, err := r.ns.Resolve("ghost"); err == nil {
		t.Fatal("a done for no pending lookup registered its node")
	}
}

// A registration that fails when made (another writer took the name
// after the check: applyDone called without checkDone stands for that
// race) unregisters what the request had made and leaves the lookup
// pending.
func TestDoneRaceLostUndoesItsRegistrations(t *testing.T) {
	r := newHelperRig(t, 0)
	rec, res := r.miss(t, "pair0")
	if _, err := r.c.Register(context.Background(), dev("pair1", 1, 1)); err != nil {
		t.Fatal(err)
	}
	d, e := decodeDone([]byte(fmt.Sprintf(`{"id":%d,"register":[
		{"path":"pair0","type":"char","major":1,"minor":2},
		{"path":"sub/x","type":"char","major":1,"minor":2},
		{"path":"pair1","type":"char","major":1,"minor":3}]}`, rec.ID)))
	if e != nil {
		t.Fatal(e)
	}
	self := dcache.Caller{Pid: uint32(syscall.Getpid()), Origin: dcache.OriginLoader}
	_, _, e = r.srv.applyDone(d, make([]bool, len(d.Regs)), self)
	if e == nil || e.body.Code != wire.CodeExists || e.body.Field != "register[2].path" {
		t.Fatalf("applyDone: %v", e)
	}
	for _, p := range []string{"pair0", "sub/x"} {
		if _, err := r.ns.Resolve(p); err == nil {
			t.Errorf("%s stayed after the request failed", p)
		}
	}
	if n, err := r.ns.Resolve("pair1"); err != nil || n.Attr().Minor != 1 {
		t.Fatalf("the other writer's pair1: %v", err)
	}
	if !pending(res) {
		t.Fatal("the failed request released the lookup")
	}
	if err := r.hs.Done(context.Background(), rec.ID, ""); err != nil {
		t.Fatal(err)
	}
	if err := released(t, res); err != nil {
		t.Fatal(err)
	}
}

// A helper's answers reuse one kept-alive connection: after the stream's
// own, answering many lookups one after the other dials once.
func TestHelperAnswersKeepTheConnectionAlive(t *testing.T) {
	r := newHelperRig(t, 0)
	before := r.conns.Load() // the stream
	for i := 0; i < 50; i++ {
		rec, res := r.miss(t, fmt.Sprintf("k%d", i))
		if _, err := r.hs.Answer(context.Background(), wire.DoneRequest{ID: rec.ID, Register: []wire.RegisterRequest{dev(rec.Path, 1, 3)}}); err != nil {
			t.Fatal(err)
		}
		if err := released(t, res); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.conns.Load() - before; n != 1 {
		t.Fatalf("50 answers took %d new connections, want 1 kept alive", n)
	}
}

// An answer over a kept connection that the daemon closed while it was
// idle goes out again on a new one.
func TestHelperAnswerAfterTheDaemonClosedTheKeptConnection(t *testing.T) {
	r := newHelperRig(t, 0)
	answer := func(name string) {
		t.Helper()
		rec, res := r.miss(t, name)
		if _, err := r.hs.Answer(context.Background(), wire.DoneRequest{ID: rec.ID, Register: []wire.RegisterRequest{dev(rec.Path, 1, 3)}}); err != nil {
			t.Fatalf("answer %s: %v", name, err)
		}
		if err := released(t, res); err != nil {
			t.Fatal(err)
		}
	}
	idles := r.idles.Load()
	answer("before")
	// The client has the answer before the server's side of the kept
	// connection is idle again; only an idle one is closed below.
	harness.Until(t, 30*time.Second, "the answer's connection to go idle", func() bool { return r.idles.Load() != idles })
	r.srv.http.closeIdle()
	answer("after")
	if n := r.conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3: the stream, the closed one, its successor", n)
	}
	if _, err := r.ns.Resolve("after"); err != nil {
		t.Fatal(err)
	}
}
