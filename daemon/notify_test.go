package daemon

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// testLogger is a JSON logger writing to w at lvl, as cmd builds for a
// file.
func testLogger(w io.Writer, lvl zapcore.Level) *zap.Logger {
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl))
}

// fakeSystemd listens on a unixgram socket in a temp dir and points
// NOTIFY_SOCKET at it, as systemd does for Type=notify services.
type fakeSystemd struct {
	t    *testing.T
	conn *net.UnixConn
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &fakeSystemd{t: t, conn: conn}
}

// next returns the next datagram that tells the daemon's state: those
// of the descriptor store (FDSTORE=1, FDSTOREREMOVE=1; keeper_test.go
// tests them) are skipped, and the descriptors they carry dropped. The
// deadline is a guard against a hang, not a wait: the datagram is sent
// before the call that the test awaits.
func (f *fakeSystemd) next() string {
	f.t.Helper()
	if err := f.conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		f.t.Fatal(err)
	}
	buf := make([]byte, 1024)
	for {
		n, err := f.conn.Read(buf)
		if err != nil {
			f.t.Fatalf("no notification: %v", err)
		}
		if msg := string(buf[:n]); !storeMessage(msg) {
			return msg
		}
	}
}

// storeMessage reports whether msg is a descriptor store message.
func storeMessage(msg string) bool {
	return strings.HasPrefix(msg, "FDSTORE=1\n") || strings.HasPrefix(msg, "FDSTOREREMOVE=1\n")
}

// pending returns what has already been sent and not read, without waiting:
// unixgram sends are synchronous, so anything sent is queued by now. (A
// past read deadline would not do: Go fails such a read before trying it.)
func (f *fakeSystemd) pending() []string {
	f.t.Helper()
	rc, err := f.conn.SyscallConn()
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	buf := make([]byte, 1024)
	for {
		var n int
		var rerr error
		if err := rc.Control(func(fd uintptr) {
			n, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		}); err != nil {
			f.t.Fatal(err)
		}
		if rerr != nil {
			if rerr != unix.EAGAIN {
				f.t.Fatalf("recvfrom: %v", rerr)
			}
			return out
		}
		if msg := string(buf[:n]); !storeMessage(msg) {
			out = append(out, msg)
		}
	}
}

func TestLifecycleNotifiesOnce(t *testing.T) {
	sd := newFakeSystemd(t)
	lc := &lifecycle{log: zap.NewNop()}
	lc.Ready()
	lc.Ready()
	if got := sd.next(); got != "READY=1" {
		t.Errorf("first notification %q, want READY=1", got)
	}
	lc.Stopping()
	lc.Stopping()
	if got := sd.next(); got != "STOPPING=1" {
		t.Errorf("second notification %q, want STOPPING=1", got)
	}
	if extra := sd.pending(); len(extra) != 0 {
		t.Errorf("repeated calls notified again: %q", extra)
	}
}

func TestLifecycleWithoutNotifySocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	var buf bytes.Buffer
	log := testLogger(&buf, zapcore.DebugLevel)
	lc := &lifecycle{log: log}
	lc.Ready()
	lc.Stopping()
	// The log is live (else the next check would pass on an empty buffer).
	for _, want := range []string{"mount is live", "stopping"} {
		if !bytes.Contains(buf.Bytes(), []byte(want)) {
			t.Errorf("log lacks %q: %s", want, buf.String())
		}
	}
	if bytes.Contains(buf.Bytes(), []byte("sd_notify")) {
		t.Errorf("notified without NOTIFY_SOCKET: %s", buf.String())
	}
}

func TestLifecycleNotifyFailureIsLoggedNotFatal(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "nobody-listens"))
	var buf bytes.Buffer
	log := testLogger(&buf, zapcore.InfoLevel)
	lc := &lifecycle{log: log}
	lc.Ready()
	if !bytes.Contains(buf.Bytes(), []byte("sd_notify failed")) {
		t.Errorf("failure not logged: %s", buf.String())
	}
}
