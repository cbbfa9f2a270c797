package builtin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
)

// fakeNS is a Registrar over a map, with the contract of modload.Registrar:
// an existing name is EEXIST and changes nothing; parents are created.
type fakeNS struct {
	mu      sync.Mutex
	nodes   map[string]modload.Node
	calls   map[string]int // Register calls per path
	failFor string         // Register of this path fails with EIO
}

func newFakeNS() *fakeNS {
	return &fakeNS{nodes: map[string]modload.Node{}, calls: map[string]int{}}
}

func (f *fakeNS) Register(n modload.Node) error {
	if err := n.Validate(); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls[n.Path]++
	if n.Path == f.failFor {
		return fmt.Errorf("fake: %s: %w", n.Path, syscall.EIO)
	}
	for p := path.Dir(n.Path); p != "."; p = path.Dir(p) {
		if e, ok := f.nodes[p]; ok && e.Type != dcache.TypeDir {
			return fmt.Errorf("fake: %s: %w", p, syscall.ENOTDIR)
		}
		if _, ok := f.nodes[p]; !ok {
			f.nodes[p] = modload.Node{Path: p, Type: dcache.TypeDir, Perm: 0755}
		}
	}
	if _, ok := f.nodes[n.Path]; ok {
		return fmt.Errorf("fake: %s: %w", n.Path, syscall.EEXIST)
	}
	f.nodes[n.Path] = n
	return nil
}

func (f *fakeNS) get(p string) (modload.Node, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, ok := f.nodes[p]
	return n, ok
}

func TestLoadRegistersTheWholeModule(t *testing.T) {
	tests := []struct {
		dir, name string
		module    string
		also      []string // other nodes the load must bring
	}{
		{"", "loop3", "loop", []string{"loop0", "loop7", "loop-control"}},
		{"", "loop-control", "loop", []string{"loop5"}},
		{"", "tty17", "vt", []string{"tty0", "tty63"}},
		{"", "ttyS2", "serial", []string{"ttyS0", "ttyS3"}},
		{"", "net", "tun", []string{"net/tun"}},
		{"net", "tun", "tun", nil},
		{"", "kvm", "kvm", nil},
		{"", "fuse", "fuse", nil},
		{"input", "event7", "input", []string{"input/mice", "input/event31"}},
		{"dri", "renderD128", "dri", []string{"dri/card0"}},
		{"", "nvidiactl", "nvidia", []string{"nvidia0", "nvidia7"}},
		{"", "snd", "snd", []string{"snd/controlC0", "snd/timer", "snd/pcmC0D0p", "snd/pcmC0D0c"}},
		{"", "dsp", "sound", []string{"mixer", "audio", "sequencer", "midi00", "sequencer2"}},
		{"", "sdc", "sdc", []string{"sdc1", "sdc15"}},
		{"", "sdz7", "sdz", []string{"sdz"}},
		{"", "i2c-3", "i2c-dev", []string{"i2c-0", "i2c-15"}},
		{"", "watchdog", "watchdog", nil},
		{"", "hwrng", "hwrng", nil},
		{"", "uinput", "uinput", nil},
		{"", "vhost-net", "vhost-net", nil},
		{"mapper", "control", "dm", nil},
	}
	for _, tt := range tests {
		t.Run(path.Join(tt.dir, tt.name), func(t *testing.T) {
			ns := newFakeNS()
			l := New(ns, nil)
			if err := l.Load(context.Background(), tt.dir, tt.name, dcache.Caller{}); err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !l.Loaded(tt.module) {
				t.Fatalf("module %s not marked loaded", tt.module)
			}
			if _, ok := ns.get(path.Join(tt.dir, tt.name)); !ok {
				t.Errorf("%s not registered", path.Join(tt.dir, tt.name))
			}
			for _, p := range tt.also {
				if _, ok := ns.get(p); !ok {
					t.Errorf("%s not registered with its module", p)
				}
			}
			// Exactly the module's nodes were registered, each once.
			for _, m := range Modules() {
				if m.Name != tt.module {
					continue
				}
				for _, n := range m.Nodes {
					got, ok := ns.get(n.Path)
					if !ok || got != n {
						t.Errorf("%s: registered %v, want %v", n.Path, got, n)
					}
					if c := ns.calls[n.Path]; c != 1 {
						t.Errorf("%s: registered %d times", n.Path, c)
					}
				}
			}
			if _, ok := ns.get("null"); ok {
				t.Error("a miss loaded the base module too")
			}
		})
	}
}

func TestLoadUnknownNameIsENOENT(t *testing.T) {
	tests := []struct{ dir, name string }{
		{"", "foo"},
		{"", "loop8"},  // loop has 0-7
		{"", "tty64"},  // vt has 0-63
		{"", "sda16"},  // 15 partitions
		{"", "sdaa"},   // 26 disks
		{"net", "tap"}, // net/ has only tun
		{"input", "event32"},
		{"nosuchdir", "null"},
		{"loop0", "x"}, // under a device
	}
	for _, tt := range tests {
		ns := newFakeNS()
		l := New(ns, nil)
		err := l.Load(context.Background(), tt.dir, tt.name, dcache.Caller{})
		if !errors.Is(err, syscall.ENOENT) || !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(%q, %q) = %v, want ENOENT", tt.dir, tt.name, err)
			continue
		}
		want := "no module provides " + path.Join(tt.dir, tt.name)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Load(%q, %q) = %q, want it to say %q", tt.dir, tt.name, err, want)
		}
		if len(ns.calls) != 0 {
			t.Errorf("Load(%q, %q) registered %v", tt.dir, tt.name, ns.calls)
		}
	}
}

func TestLoadInvalidNameIsEINVAL(t *testing.T) {
	tests := []struct{ dir, name string }{
		{"", ""}, {"", "."}, {"", ".."}, {"", "a/b"}, {"/net", "tun"}, {"net/", "tun"}, {"../x", "y"},
	}
	for _, tt := range tests {
		l := New(newFakeNS(), nil)
		if err := l.Load(context.Background(), tt.dir, tt.name, dcache.Caller{}); !errors.Is(err, syscall.EINVAL) {
			t.Errorf("Load(%q, %q) = %v, want EINVAL", tt.dir, tt.name, err)
		}
	}
}

func TestLoadTwiceIsNoOp(t *testing.T) {
	ns := newFakeNS()
	l := New(ns, nil)
	ctx := context.Background()
	if err := l.Load(ctx, "", "loop3", dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	// A node removed after the load stays removed: the module is loaded.
	ns.mu.Lock()
	delete(ns.nodes, "loop3")
	ns.mu.Unlock()
	for _, name := range []string{"loop3", "loop4", "loop-control"} {
		if err := l.Load(ctx, "", name, dcache.Caller{}); err != nil {
			t.Fatalf("second Load(%s): %v", name, err)
		}
	}
	if c := ns.calls["loop4"]; c != 1 {
		t.Errorf("loop4 registered %d times, want 1", c)
	}
	if _, ok := ns.get("loop3"); ok {
		t.Error("a second load brought back a removed node")
	}
}

func TestLoadConcurrentSameModuleRegistersOnce(t *testing.T) {
	for _, procs := range []int{1, 2, 8} {
		t.Run(fmt.Sprint(procs), func(t *testing.T) {
			var registers atomic.Int64
			ns := newFakeNS()
			reg := modload.RegistrarFunc(func(n modload.Node) error {
				registers.Add(1)
				return ns.Register(n)
			})
			l := New(reg, nil)
			names := []string{"tty0", "tty1", "tty33", "tty63"}
			const goroutines = 64
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make(chan error, goroutines)
			for g := 0; g < goroutines; g++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					name := names[g%len(names)]
					if err := l.Load(context.Background(), "", name, dcache.Caller{}); err != nil {
						errs <- err
						return
					}
					// When Load returns, the node is there.
					if _, ok := ns.get(name); !ok {
						errs <- fmt.Errorf("%s missing after Load returned", name)
					}
				}()
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if got := registers.Load(); got != 64 {
				t.Errorf("%d Register calls, want 64 (one per vt node)", got)
			}
		})
	}
}

func TestLoadFailureIsRetried(t *testing.T) {
	ns := newFakeNS()
	ns.failFor = "loop5"
	l := New(ns, nil)
	ctx := context.Background()
	err := l.Load(ctx, "", "loop0", dcache.Caller{})
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("Load = %v, want EIO", err)
	}
	if l.Loaded("loop") {
		t.Fatal("a failed load was marked loaded")
	}
	ns.failFor = ""
	// The retry meets EEXIST for what the first try registered: fine.
	if err := l.Load(ctx, "", "loop0", dcache.Caller{}); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if _, ok := ns.get("loop5"); !ok || !l.Loaded("loop") {
		t.Error("retry did not complete the module")
	}
}

func TestLoadHonoursCancelBeforeRegistering(t *testing.T) {
	ns := newFakeNS()
	l := New(ns, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Load(ctx, "", "kvm", dcache.Caller{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Load = %v, want context.Canceled", err)
	}
	if len(ns.calls) != 0 || l.Loaded("kvm") {
		t.Error("a cancelled load changed state")
	}
	// A load already done answers done even with a dead context.
	if err := l.Load(context.Background(), "", "kvm", dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	if err := l.Load(ctx, "", "kvm", dcache.Caller{}); err != nil {
		t.Errorf("Load of a loaded module with a cancelled ctx = %v, want nil", err)
	}
}

// A caller waiting behind another caller's load gives up when its context
// ends, and the load it waited for still completes.
func TestLoadWaiterCanGiveUp(t *testing.T) {
	ns := newFakeNS()
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	reg := modload.RegistrarFunc(func(n modload.Node) error {
		once.Do(func() { close(entered); <-release })
		return ns.Register(n)
	})
	l := New(reg, nil)
	first := make(chan error, 1)
	go func() { first <- l.Load(context.Background(), "", "fuse", dcache.Caller{}) }()
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	second := make(chan error, 1)
	go func() { second <- l.Load(ctx, "", "fuse", dcache.Caller{}) }()
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Errorf("waiting Load = %v, want context.Canceled", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Errorf("first Load = %v", err)
	}
	if !l.Loaded("fuse") {
		t.Error("fuse not loaded")
	}
}

func TestRegisterBase(t *testing.T) {
	ns := newFakeNS()
	l := New(ns, nil)
	// A node made by hand before start is kept: EEXIST is success.
	if err := ns.Register(chr("null", 1, 3, 0600, 0)); err != nil {
		t.Fatal(err)
	}
	if err := l.RegisterBase(context.Background()); err != nil {
		t.Fatalf("RegisterBase: %v", err)
	}
	for _, n := range Base().Nodes {
		got, ok := ns.get(n.Path)
		if !ok {
			t.Errorf("%s not registered", n.Path)
			continue
		}
		if n.Path != "null" && got != n {
			t.Errorf("%s: got %v, want %v", n.Path, got, n)
		}
	}
	if n, _ := ns.get("null"); n.Perm != 0600 {
		t.Errorf("RegisterBase replaced an existing node: %v", n)
	}
	if !l.Loaded(BaseModule) {
		t.Error("base not marked loaded")
	}
	// A miss for a base name after start does not re-register it.
	ns.mu.Lock()
	delete(ns.nodes, "zero")
	ns.mu.Unlock()
	if err := l.Load(context.Background(), "", "zero", dcache.Caller{}); err != nil {
		t.Fatal(err)
	}
	if _, ok := ns.get("zero"); ok {
		t.Error("a removed base node came back")
	}
	if err := l.LoadModule(context.Background(), "nosuch"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("LoadModule(nosuch) = %v, want ENOENT", err)
	}
}
