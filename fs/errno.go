package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// toStatus maps an error from dcache or lookup to the FUSE status the
// kernel passes on to the caller. Those packages wrap a syscall.Errno in
// every error they return, so errors.As finds it; a context error (an
// interrupted wait that some layer reported as such) is EINTR; anything
// else is a bug somewhere below and becomes EIO, which the caller of
// toStatus logs.
func toStatus(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if errno == 0 {
			return fuse.EIO // a zero errno would read as success
		}
		return fuse.Status(errno)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fuse.EINTR
	}
	return fuse.EIO
}

// known reports whether err carries an errno, that is whether toStatus
// maps it without falling back to EIO.
func known(err error) bool {
	var errno syscall.Errno
	return errors.As(err, &errno) && errno != 0
}
