package control

import (
	"context"
	"net/http"

	"github.com/devfsd/devfsd/control/wire"
)

// Kernel is the kernel device source, as the control socket uses it.
type Kernel interface {
	// Info returns what the kernel said about the device whose node is at
	// path; ok is false if no kernel device has that name.
	Info(path string) (info wire.DeviceInfo, ok bool)
	// Trigger rescans sysfs and converges the namespace to it.
	Trigger(ctx context.Context) (wire.Trigger, error)
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) *apiError {
	p, e := pathOnlyQuery(r)
	if e != nil {
		return e
	}
	if s.opts.Kernel == nil {
		return errf(http.StatusNotFound, wire.CodeNotFound, "path",
			"%q is no kernel device (this daemon does not serve the kernel's devices: devices is not kernel)", p)
	}
	info, ok := s.opts.Kernel.Info(p)
	if !ok {
		return errf(http.StatusNotFound, wire.CodeNotFound, "path", "%q is no kernel device", p)
	}
	if info.Env == nil {
		info.Env = map[string]string{}
	}
	writeJSON(w, http.StatusOK, info)
	return nil
}

func (s *Server) handleTrigger(w http.ResponseWriter, r *http.Request) *apiError {
	if r.ContentLength != 0 {
		body, e := readBody(r)
		if e != nil {
			return e
		}
		if _, e := decodeObject(body); e != nil { // {} or nothing: trigger takes no fields
			return e
		}
	}
	if s.opts.Kernel == nil {
		return errf(http.StatusConflict, wire.CodeNotSupported, "",
			"trigger rescans the kernel's devices; this daemon does not serve them (devices is not kernel)")
	}
	res, err := s.opts.Kernel.Trigger(r.Context())
	if err != nil {
		return errf(http.StatusInternalServerError, wire.CodeInternal, "", "rescan: %v", err)
	}
	c := credOf(r)
	s.synced(r.Context(), c)
	writeJSON(w, http.StatusOK, res)
	return nil
}
