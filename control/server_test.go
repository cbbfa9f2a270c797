package control

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/devfsd/devfsd/control/client"
	"github.com/devfsd/devfsd/dcache"
)

func newServer(t *testing.T, path string) (*Server, error) {
	ns := dcache.New(dcache.Options{})
	return Listen(Options{Path: path, Namespace: ns, Hub: NewHub(nil), WriteUID: -1, WriteGID: -1})
}

func TestListenRefusesLiveSocketAndOtherFiles(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	s, err := newServer(t, sock)
	if err != nil {
		t.Fatal(err)
	}
	s.Serve()
	if _, err := newServer(t, sock); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	st, err := client.New(sock).Stats(context.Background())
	if err != nil || st.Nodes != 1 {
		t.Fatalf("stats %+v %v", st, err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0600 {
		t.Fatalf("socket file: %v %v", fi, err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Shutdown: %v", err)
	}
	plain := filepath.Join(dir, "plain")
	os.WriteFile(plain, []byte("keep me"), 0o644)
	if _, err := newServer(t, plain); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(plain); string(b) != "keep me" {
		t.Fatal("the regular file was touched")
	}
	// A stale socket is replaced.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	s2, err := newServer(t, stale)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	s2.Shutdown(context.Background())
}
