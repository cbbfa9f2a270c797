package builtin

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

func widgetModule() Module {
	return Module{Name: "widget", Description: "the widget board", Nodes: []modload.Node{
		dir("widgets", 0750),
		chr("widget0", 240, 0, 0660, 20),
		{Path: "widgets/first", Type: dcache.TypeSymlink, Perm: 0777, Target: "../widget0"},
	}}
}

func TestExtensionModulesCheck(t *testing.T) {
	node := func(n modload.Node) []modload.Node { return []modload.Node{n} }
	tests := []struct {
		name string
		ext  []Module
		want []string // each a substring of one error, in order; nil: valid
		at   [][2]int // where each error is: module, node
	}{
		{"none", nil, nil, nil},
		{"widget", []Module{widgetModule()}, nil, nil},
		{"shares a catalogue directory", []Module{{Name: "w", Nodes: one(dir("net", 0755), chr("net/widget", 240, 1, 0600, 0))}}, nil, nil},
		{"two modules share a directory", []Module{
			{Name: "a", Nodes: one(chr("w/a", 240, 1, 0600, 0))},
			{Name: "b", Nodes: one(dir("w", 0755), chr("w/b", 240, 2, 0600, 0))},
		}, nil, nil},
		{"bad name", []Module{{Name: "a b", Nodes: one(chr("ab", 240, 0, 0600, 0))}}, []string{`"a b" is not a module name`}, [][2]int{{0, -1}}},
		{"empty name", []Module{{Name: "", Nodes: one(chr("ab", 240, 0, 0600, 0))}}, []string{`"" is not a module name`}, [][2]int{{0, -1}}},
		{"long name", []Module{{Name: strings.Repeat("x", MaxModuleName+1), Nodes: one(chr("ab", 240, 0, 0600, 0))}}, []string{"is not a module name"}, [][2]int{{0, -1}}},
		{"catalogue name", []Module{{Name: "loop", Nodes: one(chr("ab", 240, 0, 0600, 0))}}, []string{`"loop" is a catalogue module`}, [][2]int{{0, -1}}},
		{"name twice", []Module{
			{Name: "w", Nodes: one(chr("a", 240, 0, 0600, 0))},
			{Name: "w", Nodes: one(chr("b", 240, 1, 0600, 0))},
		}, []string{`"w" is used by module 0 too`}, [][2]int{{1, -1}}},
		{"no nodes", []Module{{Name: "w"}}, []string{"has no nodes"}, [][2]int{{0, -1}}},
		{"mode", []Module{{Name: "w", Nodes: node(chr("a", 240, 0, 010000, 0))}}, []string{"outside 07777"}, [][2]int{{0, 0}}},
		{"major", []Module{{Name: "w", Nodes: node(chr("a", 4096, 0, 0600, 0))}}, []string{"out of range"}, [][2]int{{0, 0}}},
		{"minor", []Module{{Name: "w", Nodes: node(chr("a", 1, 1<<20, 0600, 0))}}, []string{"out of range"}, [][2]int{{0, 0}}},
		{"symlink without target", []Module{{Name: "w", Nodes: node(modload.Node{Path: "a", Type: dcache.TypeSymlink, Perm: 0777})}}, []string{"needs a target"}, [][2]int{{0, 0}}},
		{"absolute path", []Module{{Name: "w", Nodes: node(chr("/a", 240, 0, 0600, 0))}}, []string{"not clean and relative"}, [][2]int{{0, 0}}},
		{"dot dot", []Module{{Name: "w", Nodes: node(chr("x/../a", 240, 0, 0600, 0))}}, []string{"not clean"}, [][2]int{{0, 0}}},
		{"catalogue node", []Module{{Name: "w", Nodes: one(chr("ok", 240, 0, 0600, 0), chr("null", 1, 3, 0666, 0))}},
			[]string{`null is provided by catalogue module "base" already`}, [][2]int{{0, 1}}},
		{"catalogue directory as a device", []Module{{Name: "w", Nodes: node(chr("snd", 240, 0, 0600, 0))}},
			[]string{`snd is a directory of catalogue module "snd"`}, [][2]int{{0, 0}}},
		{"under a catalogue device", []Module{{Name: "w", Nodes: node(chr("null/x", 240, 0, 0600, 0))}},
			[]string{`parent null of null/x is a device or symlink of catalogue module "base"`}, [][2]int{{0, 0}}},
		{"catalogue device as a directory", []Module{{Name: "w", Nodes: node(dir("kvm", 0755))}},
			[]string{`kvm is a device or symlink of catalogue module "kvm"`}, [][2]int{{0, 0}}},
		{"another extension's node", []Module{
			{Name: "a", Nodes: one(chr("widget0", 240, 0, 0600, 0))},
			{Name: "b", Nodes: one(chr("widget0", 240, 0, 0600, 0))},
		}, []string{`widget0 is provided by module "a" already`}, [][2]int{{1, 0}}},
		{"another extension's directory", []Module{
			{Name: "a", Nodes: one(chr("w/x", 240, 0, 0600, 0))},
			{Name: "b", Nodes: one(chr("w", 240, 1, 0600, 0))},
		}, []string{`w is a directory of module "a"`}, [][2]int{{1, 0}}},
		{"several at once", []Module{
			{Name: "loop", Nodes: one(chr("zero", 1, 5, 0666, 0))},
			{Name: "ok", Nodes: one(chr("fine", 240, 0, 0600, 0), modload.Node{Path: "l", Type: dcache.TypeSymlink, Perm: 0777})},
		}, []string{"catalogue module", "zero is provided", "needs a target"}, [][2]int{{0, -1}, {0, 0}, {1, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckExtensions(tt.ext)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("valid extensions refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			var errs []error
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			} else {
				errs = []error{err}
			}
			if len(errs) != len(tt.want) {
				t.Fatalf("%d errors, want %d: %v", len(errs), len(tt.want), err)
			}
			for i, e := range errs {
				var ee *ExtensionError
				if !errors.As(e, &ee) {
					t.Fatalf("error %d is %T, not *ExtensionError", i, e)
				}
				if !strings.Contains(ee.Error(), tt.want[i]) {
					t.Errorf("error %d %q does not say %q", i, ee, tt.want[i])
				}
				if ee.Module != tt.at[i][0] || ee.Node != tt.at[i][1] {
					t.Errorf("error %d %q is at module %d node %d, want %v", i, ee, ee.Module, ee.Node, tt.at[i])
				}
			}
		})
	}
}

func TestExtensionModulesLoadOnMissLikeTheCatalogue(t *testing.T) {
	for _, name := range []string{"widget0", "widgets"} {
		t.Run(name, func(t *testing.T) {
			ns := newFakeNS()
			l := New(ns, nil)
			changed, err := l.SetExtensions([]Module{widgetModule()})
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"widget0", "widgets", "widgets/first"}; !reflect.DeepEqual(changed, want) {
				t.Errorf("changed paths %q, want %q", changed, want)
			}
			if len(ns.calls) != 0 {
				t.Fatalf("SetExtensions registered %v", ns.calls)
			}
			if err := l.Load(context.Background(), "", name, dcache.Caller{}); err != nil {
				t.Fatal(err)
			}
			if !l.Loaded("widget") {
				t.Error("widget not marked loaded")
			}
			for _, n := range widgetModule().Nodes {
				if got, ok := ns.get(n.Path); !ok || got != n {
					t.Errorf("%s: registered %v, want %v", n.Path, got, n)
				}
			}
			if _, ok := ns.get("loop0"); ok {
				t.Error("a catalogue module was loaded too")
			}
		})
	}
}

func TestExtensionModulesInCatalogueDirectoryLoadWithIt(t *testing.T) {
	ns := newFakeNS()
	l := New(ns, nil)
	if _, err := l.SetExtensions([]Module{{Name: "netw", Nodes: one(chr("net/widget", 240, 1, 0600, 0))}}); err != nil {
		t.Fatal(err)
	}
	// A lookup of the shared directory loads every module under it.
	if err := l.Load(context.Background(), "", "net", dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"net/tun", "net/widget"} {
		if _, ok := ns.get(p); !ok {
			t.Errorf("%s not registered by a lookup of net", p)
		}
	}
}

func TestExtensionModulesLoadModuleByName(t *testing.T) {
	ns := newFakeNS()
	l := New(ns, nil)
	if err := l.LoadModule(context.Background(), "widget"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("LoadModule before SetExtensions: %v", err)
	}
	if _, err := l.SetExtensions([]Module{widgetModule()}); err != nil {
		t.Fatal(err)
	}
	if err := l.LoadModule(context.Background(), "widget"); err != nil {
		t.Fatal(err)
	}
	if _, ok := ns.get("widget0"); !ok {
		t.Error("LoadModule(widget) registered no widget0")
	}
}

// Replacing the set: an unchanged module keeps its state (a node removed
// by hand stays removed), a changed one is loaded again on its next miss,
// a removed one answers ENOENT and unregisters nothing, and only the
// paths of new or changed modules are reported.
func TestExtensionModulesReplace(t *testing.T) {
	ctx := context.Background()
	ns := newFakeNS()
	l := New(ns, nil)
	gadget := Module{Name: "gadget", Nodes: one(chr("gadget0", 241, 0, 0600, 0))}
	if _, err := l.SetExtensions([]Module{widgetModule()}); err != nil {
		t.Fatal(err)
	}
	if err := l.Load(ctx, "", "widget0", dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	ns.mu.Lock()
	delete(ns.nodes, "widget0") // removed by hand
	ns.mu.Unlock()

	changed, err := l.SetExtensions([]Module{gadget, widgetModule()})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"gadget0"}; !reflect.DeepEqual(changed, want) {
		t.Errorf("adding gadget: changed %q, want %q", changed, want)
	}
	if !l.Loaded("widget") {
		t.Error("the unchanged widget module lost its load state")
	}
	if err := l.Load(ctx, "", "widget0", dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := ns.get("widget0"); ok {
		t.Error("a node removed by hand came back through an unchanged module")
	}

	// widget changes (one more node): its paths change, and its next
	// miss loads it again.
	w2 := widgetModule()
	w2.Nodes = append(w2.Nodes, chr("widget1", 240, 1, 0660, 20))
	changed, err = l.SetExtensions([]Module{gadget, w2})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"widget0", "widget1", "widgets", "widgets/first"}; !reflect.DeepEqual(changed, want) {
		t.Errorf("changing widget: changed %q, want %q", changed, want)
	}
	if l.Loaded("widget") {
		t.Error("a changed module kept its load state")
	}
	if err := l.Load(ctx, "", "widget1", dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"widget0", "widget1"} {
		if _, ok := ns.get(p); !ok {
			t.Errorf("%s not registered by the changed module", p)
		}
	}

	// Removal: nothing changes answer, nothing is unregistered.
	changed, err = l.SetExtensions([]Module{gadget})
	if err != nil || len(changed) != 0 {
		t.Fatalf("removing widget: changed %q, %v", changed, err)
	}
	if _, ok := ns.get("widget0"); !ok {
		t.Error("removing the module unregistered its node")
	}
	if err := l.LoadModule(ctx, "widget"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("LoadModule of a removed module: %v", err)
	}
	ns.mu.Lock()
	delete(ns.nodes, "widget1")
	ns.mu.Unlock()
	if err := l.Load(ctx, "", "widget1", dcache.Caller{}); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("Load of a removed module's name: %v", err)
	}
	if _, err := l.SetExtensions(nil); err != nil || l.Extensions() != nil {
		t.Fatalf("SetExtensions(nil): %v, left %v", err, l.Extensions())
	}
}

func TestExtensionModulesInvalidChangesNothing(t *testing.T) {
	l := New(newFakeNS(), nil)
	if _, err := l.SetExtensions([]Module{widgetModule()}); err != nil {
		t.Fatal(err)
	}
	bad := []Module{widgetModule(), {Name: "dup", Nodes: one(chr("widget0", 1, 1, 0600, 0))}}
	if _, err := l.SetExtensions(bad); err == nil || !strings.Contains(err.Error(), "widget0 is provided by") {
		t.Fatalf("SetExtensions of a colliding set: %v", err)
	}
	if got := l.Extensions(); !reflect.DeepEqual(got, []Module{widgetModule()}) {
		t.Errorf("after a refused set: %v", got)
	}
}

// Loads and set replacements run together; -race checks the table's
// publication, and every load of a name the set had all along succeeds.
func TestExtensionModulesReplacedDuringLoads(t *testing.T) {
	ns := newFakeNS()
	l := New(ns, nil)
	if _, err := l.SetExtensions([]Module{widgetModule()}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if err := l.Load(context.Background(), "", "widget0", dcache.Caller{}); err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	for i := 0; i < 100; i++ {
		extra := Module{Name: "g", Nodes: one(chr(fmt.Sprintf("g%d", i), 241, uint32(i), 0600, 0))}
		if _, err := l.SetExtensions([]Module{widgetModule(), extra}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}
