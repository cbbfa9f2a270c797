package helperd

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
)

// silentDaemon listens on a Unix socket, reads each request, tells reqs
// its path, and never answers.
func silentDaemon(t *testing.T) (sock string, reqs <-chan string) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "d.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 16)
	done := make(chan struct{})
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(done)
				return
			}
			conns = append(conns, c)
			go func() {
				if r, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					ch <- r.URL.Path
				}
			}()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return sock, ch
}

// A helper asked to stop (SIGTERM: its context ends) while it attaches or
// runs its start-up scan ends cleanly (nil: exit status 0), as one asked
// while it serves does: a unit stopped soon after its start is no failure.
func TestHelperStoppedDuringStartUpEndsCleanly(t *testing.T) {
	for _, tc := range []struct {
		name   string
		noPoll bool
		want   string // the request the stop comes during
	}{
		{"attach", false, "/v1/helper"},
		{"start-up scan", true, "/v1/list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock, reqs := silentDaemon(t)
			conf := filepath.Join(t.TempDir(), "devfsd.conf")
			if err := os.WriteFile(conf, []byte("REGISTER ^null$ PERMISSIONS root.root 0666\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ended := make(chan error, 1)
			go func() {
				ended <- Run(ctx, Options{Config: conf, Socket: sock, Mount: t.TempDir(), NoPoll: tc.noPoll, Foreground: true, ExecTimeout: time.Second}, zap.NewNop())
			}()
			select {
			case p := <-reqs:
				if p != tc.want {
					t.Fatalf("the helper asked first for %s, want %s", p, tc.want)
				}
			case err := <-ended:
				t.Fatalf("the helper ended before asking the daemon anything: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatalf("the helper did not ask for %s within 30s", tc.want)
			}
			cancel()
			select {
			case err := <-ended:
				if err != nil {
					t.Fatalf("the helper stopped during %s ended with %v, want a clean end", tc.name, err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("the helper did not end within 30s of its stop")
			}
		})
	}
}
