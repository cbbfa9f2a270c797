package helperd

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/devfsd/devfsd/control"
	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/dcache"
	"github.com/devfsd/devfsd/modload/devfsdconf"
)

// newTestHost is a helperHost on an in-process control socket.
func newTestHost(t *testing.T) (*helperHost, *dcache.Namespace) {
	t.Helper()
	hub := control.NewHub(nil)
	ns := dcache.New(dcache.Options{Sink: hub})
	srv, err := control.Listen(control.Options{Path: filepath.Join(t.TempDir(), "s.sock"), Namespace: ns, Hub: hub,
		WriteUID: -1, WriteGID: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv.Serve()
	c := client.New(srv.Path())
	t.Cleanup(func() {
		c.Close()
		srv.Shutdown(context.Background())
	})
	h, err := newHelperHost(context.Background(), Options{Mount: "/nonexistent-mount"}, c, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return h, ns
}

func exists(ns *dcache.Namespace, p string) bool {
	_, err := ns.Resolve(p)
	return err == nil
}

// While a batch is kept, the rules' changes to a batched node change the
// batch and nothing else; what the batch cannot answer makes it first.
func TestHostBatch(t *testing.T) {
	h, ns := newTestHost(t)
	f := ctlFS{h}
	char := devfsdconf.Stat{Mode: devfsdconf.TypeChar | 0o600, Major: 14, Minor: 3}
	h.startBatch()
	if err := f.Make("snd/dsp", char, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Chmod("snd/dsp", 0o640); err != nil {
		t.Fatal(err)
	}
	if err := f.Chown("snd/dsp", -1, 29); err != nil {
		t.Fatal(err)
	}
	st, err := f.Lstat("snd/dsp")
	if err != nil || st.Mode != devfsdconf.TypeChar|0o640 || st.GID != 29 || st.Major != 14 {
		t.Fatalf("Lstat of the batched node: %+v %v", st, err)
	}
	if exists(ns, "snd/dsp") || exists(ns, "snd") {
		t.Fatal("a batched node was registered before the batch was sent")
	}
	if err := f.Make("snd/dsp", char, 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Make of a batched name: %v, want ErrExist", err)
	}
	// The directory after what goes in it: the batch is made, and the
	// directory's register meets the one the daemon made.
	if err := f.Make("snd", devfsdconf.Stat{Mode: devfsdconf.TypeDir | 0o755}, 0o755); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Make of a directory above a batched node: %v, want ErrExist", err)
	}
	n, err := ns.Resolve("snd/dsp")
	if err != nil || n.Attr().Mode&dcache.PermMask != 0o640 || n.Attr().Gid != 29 {
		t.Fatalf("snd/dsp after the flush: %v, want 0640 gid 29 as the batch had it", err)
	}
	if len(h.batch.regs) != 0 {
		t.Fatalf("batch after a flush: %+v", h.batch.regs)
	}
	// Removing a batched node drops it; ReadDir makes the rest.
	if err := f.Make("mixer", char, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Make("audio", char, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove("mixer"); err != nil {
		t.Fatal(err)
	}
	names, err := f.ReadDir("")
	if err != nil {
		t.Fatal(err)
	}
	if exists(ns, "mixer") || !exists(ns, "audio") {
		t.Fatalf("after Remove and ReadDir: mixer %v audio %v; listing %v", exists(ns, "mixer"), exists(ns, "audio"), names)
	}
	if b := h.endBatch(); len(b.regs) != 0 || len(b.errs) != 0 {
		t.Fatalf("batch at the end: %+v", b)
	}
}
