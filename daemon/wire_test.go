package daemon

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"testing"

	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload"
	"github.com/devfsd/devfsd/modload/builtin"
)

// The built-in loader over the real namespace: the base set at start, then
// modules on a miss, each node with its catalogue attributes.
func TestBuiltinOverNamespace(t *testing.T) {
	ns := dcache.New(dcache.Options{})
	l := builtin.New(nsRegistrar{ns}, nil)
	ctx := context.Background()
	if err := l.RegisterBase(ctx); err != nil {
		t.Fatalf("RegisterBase: %v", err)
	}
	misses := []struct{ dir, name string }{{"", "loop3"}, {"", "net"}, {"", "snd"}, {"", "sdb2"}, {"", "kvm"}, {"dri", "renderD128"}}
	for _, m := range misses {
		if _, err := ns.Resolve(m.name); err == nil && m.dir == "" {
			t.Fatalf("%s exists before its load", m.name)
		}
	}
	// Concurrent misses of the same and different modules.
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		for _, m := range misses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := l.Load(ctx, m.dir, m.name, dcache.Caller{}); err != nil {
					t.Errorf("Load(%q, %q): %v", m.dir, m.name, err)
				}
			}()
		}
	}
	wg.Wait()
	want := map[string]bool{}
	for _, m := range builtin.Modules() {
		switch m.Name {
		case builtin.BaseModule, "loop", "tun", "snd", "sdb", "kvm", "dri":
		default:
			continue
		}
		for _, n := range m.Nodes {
			want[n.Path] = true
			node, err := ns.Resolve(n.Path)
			if err != nil {
				t.Errorf("%s: %v", n.Path, err)
				continue
			}
			a := node.Attr()
			if a.Type != map[dcache.Type]dcache.Type{
				dcache.TypeChar: dcache.TypeChar, dcache.TypeBlock: dcache.TypeBlock,
				dcache.TypeDir: dcache.TypeDir, dcache.TypeSymlink: dcache.TypeSymlink,
			}[n.Type] {
				t.Errorf("%s: type %v, want %v", n.Path, a.Type, n.Type)
			}
			if a.Mode&07777 != n.Perm && n.Type != dcache.TypeSymlink || a.Uid != n.UID || a.Gid != n.GID {
				t.Errorf("%s: mode %o %d:%d, want %v", n.Path, a.Mode, a.Uid, a.Gid, n)
			}
			if a.Major != n.Major || a.Minor != n.Minor {
				t.Errorf("%s: %d:%d, want %v", n.Path, a.Major, a.Minor, n)
			}
			if n.Type == dcache.TypeSymlink {
				if got, _ := node.Readlink(); got != n.Target {
					t.Errorf("%s -> %q, want %q", n.Path, got, n.Target)
				}
			}
		}
	}
	if !want["loop-control"] || !want["snd/timer"] || !want["dri/renderD128"] {
		t.Fatal("test did not cover the modules it meant to")
	}
	// A name no module provides: ENOENT, and nothing registered.
	before := ns.Root().Len()
	if err := l.Load(ctx, "", "nosuchdevice", dcache.Caller{}); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("unknown name: %v, want ENOENT", err)
	}
	if ns.Root().Len() != before {
		t.Error("a failed load changed the root")
	}
}

func TestNSRegistrarEEXIST(t *testing.T) {
	ns := dcache.New(dcache.Options{})
	r := nsRegistrar{ns}
	n := modload.Node{Path: "null", Type: dcache.TypeChar, Major: 1, Minor: 3, Perm: 0666}
	if err := r.Register(n); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(n); !errors.Is(err, syscall.EEXIST) {
		t.Errorf("second Register = %v, want EEXIST", err)
	}
	if err := r.Register(modload.Node{Path: "null/x", Type: dcache.TypeChar}); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("under a device = %v, want ENOTDIR", err)
	}
	if err := r.Register(modload.Node{Path: "/abs", Type: dcache.TypeChar}); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("bad node = %v, want EINVAL", err)
	}
}
