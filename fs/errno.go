package fs

import (
	"context"
	"errors"
	iofs "io/fs"
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
	if errno, ok := errnoOf(err); ok {
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
	errno, ok := errnoOf(err)
	return ok && errno != 0
}

// errnoOf finds the syscall.Errno in err's chain. The two shapes every
// miss and most failures take, a bare Errno and an *fs.PathError around
// one, are matched directly: errors.As walks the chain by reflection,
// which showed in profiles of the miss path.
func errnoOf(err error) (syscall.Errno, bool) {
	switch e := err.(type) {
	case syscall.Errno:
		return e, true
	case *iofs.PathError:
		if errno, ok := e.Err.(syscall.Errno); ok {
			return errno, true
		}
	}
	var errno syscall.Errno
	ok := errors.As(err, &errno)
	return errno, ok
}
