package control

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"

	"github.com/devfsd/devfsd/control/wire"
)

// handleUpgrade is POST /v1/upgrade {"binary": PATH}: root only; binary
// is optional (the running one's), else an absolute path.
func (s *Server) handleUpgrade(w http.ResponseWriter, r *http.Request) *apiError {
	if e := viewsRoot(credOf(r)); e != nil {
		return errf(http.StatusForbidden, wire.CodePermission, "",
			"uid %d may not upgrade the daemon: it runs a program as root (root only)", credOf(r).Uid)
	}
	if s.opts.Upgrade == nil {
		return errf(http.StatusNotImplemented, wire.CodeNotSupported, "", "this daemon cannot be upgraded in place")
	}
	var binary string
	if r.ContentLength != 0 {
		body, e := readBody(r)
		if e != nil {
			return e
		}
		o, e := decodeObject(body, "binary")
		if e != nil {
			return e
		}
		b, ok, e := o.str("binary")
		if e != nil {
			return e
		}
		if ok {
			if b == "" || !filepath.IsAbs(b) || filepath.Clean(b) != b {
				return bad(wire.CodeInvalidArgument, "binary", "binary must be an absolute, clean path, not %q", b)
			}
			fi, err := os.Stat(b)
			if err != nil {
				return bad(wire.CodeInvalidArgument, "binary", "%v", err)
			}
			if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
				return bad(wire.CodeInvalidArgument, "binary", "%s is not an executable file", b)
			}
			binary = b
		}
	}
	res, err := s.opts.Upgrade(r.Context(), binary)
	if err != nil {
		return errf(http.StatusInternalServerError, wire.CodeInternal, "", "upgrade failed, the daemon goes on: %v", err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// Handover stops the server for a successor that serves the same socket:
// it returns a duplicate of the listening socket (the caller passes it
// on, and closes it), ends the event streams and waits (as Shutdown
// does), and stops accepting; requests already read are answered, those
// that come on a connection already open are refused (shutting_down),
// and connections not yet accepted wait in the socket for the successor.
// The socket file stays. done is closed once the server has finished
// (every request answered, bounded by ctx). A server handed over is not
// served again: Listen with Options.Listener makes a new one of the
// socket (a failed handover).
func (s *Server) Handover(ctx context.Context) (sock *os.File, done <-chan struct{}, err error) {
	f, err := s.ln.File()
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan struct{})
	handed := false
	s.shutOnce.Do(func() {
		handed = true
		s.stop()
		go func() {
			defer close(ch)
			if err := s.http.shutdown(ctx); err != nil {
				s.http.close()
			}
		}()
	})
	if !handed {
		f.Close()
		return nil, nil, errors.New("control: already shut down")
	}
	return f, ch, nil
}
