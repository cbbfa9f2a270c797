package control

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/control/wire"
	"github.com/devfsd/devfsd/dcache"
)

// TestChangeDoesNotWaitForAnUndeliverableNotify: a change that
// Options.MustNotWait names (the name's lookup waits for its loader, or
// the loader makes it) is answered without waiting for SyncNotifies —
// which here never completes, as the kernel's notify cannot while that
// lookup holds its directory — and counted as skipped; any other change
// waits, bounded, and a wait that runs out is counted.
func TestChangeDoesNotWaitForAnUndeliverableNotify(t *testing.T) {
	var syncs atomic.Int64
	var mu sync.Mutex
	var asked []string
	sock := filepath.Join(t.TempDir(), "s.sock")
	s, err := Listen(Options{Path: sock, Namespace: dcache.New(dcache.Options{}), Hub: NewHub(nil),
		WriteUID: -1, WriteGID: -1,
		SyncNotifies: func(ctx context.Context) error {
			syncs.Add(1)
			<-ctx.Done() // an undeliverable notify: only the bound ends the wait
			return ctx.Err()
		},
		MustNotWait: func(path string, c dcache.Caller) bool {
			mu.Lock()
			asked = append(asked, path)
			mu.Unlock()
			if c.Origin != dcache.OriginControl {
				t.Errorf("MustNotWait asked for %s with origin %v, want control", path, c.Origin)
			}
			return path == "loading/dsp"
		}})
	if err != nil {
		t.Fatal(err)
	}
	s.Serve()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	c := client.New(sock)
	t.Cleanup(c.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	major, minor := int64(14), int64(3)
	if _, err := c.Register(ctx, wire.RegisterRequest{Path: "loading/dsp", Type: "char", Major: &major, Minor: &minor}); err != nil {
		t.Fatal(err)
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if syncs.Load() != 0 || st.Extra["notify_wait_skipped"] != 1 || st.Extra["notify_wait_timeouts"] != 0 {
		t.Fatalf("register of a name being loaded: %d waits, skipped %d, timed out %d; want 0, 1, 0",
			syncs.Load(), st.Extra["notify_wait_skipped"], st.Extra["notify_wait_timeouts"])
	}
	if _, err := c.Register(ctx, wire.RegisterRequest{Path: "other", Type: "char", Major: &major, Minor: &minor}); err != nil {
		t.Fatal(err)
	}
	if st, err = c.Stats(ctx); err != nil {
		t.Fatal(err)
	}
	if syncs.Load() != 1 || st.Extra["notify_wait_skipped"] != 1 || st.Extra["notify_wait_timeouts"] != 1 {
		t.Fatalf("register of another name: %d waits, skipped %d, timed out %d; want 1, 1, 1",
			syncs.Load(), st.Extra["notify_wait_skipped"], st.Extra["notify_wait_timeouts"])
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || asked[0] != "loading/dsp" || asked[1] != "other" {
		t.Errorf("MustNotWait asked for %q, want [loading/dsp other]", asked)
	}
}
