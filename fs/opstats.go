package fs

import (
	"time"
	_ "unsafe" // for go:linkname
)

// Op is a FUSE request kind the server answers, for OpObserver.
type Op uint8

// The requests the server times (FORGET, RELEASE and RELEASEDIR have no
// answer and are not timed).
const (
	OpLookup Op = iota
	OpGetAttr
	OpSetAttr
	OpMknod
	OpMkdir
	OpSymlink
	OpReadlink
	OpLink
	OpUnlink
	OpRmdir
	OpRename
	OpAccess
	OpStatFs
	OpOpen
	OpCreate
	OpRead
	OpWrite
	OpFallocate
	OpOpenDir
	OpReadDir
	OpReadDirPlus
	OpLseek
	NumOps // the number of Ops
)

var opNames = [NumOps]string{"LOOKUP", "GETATTR", "SETATTR", "MKNOD", "MKDIR", "SYMLINK", "READLINK", "LINK", "UNLINK", "RMDIR", "RENAME", "ACCESS", "STATFS", "OPEN", "CREATE", "READ", "WRITE", "FALLOCATE", "OPENDIR", "READDIR", "READDIRPLUS", "LSEEK"}

// String returns the opcode's FUSE name: "LOOKUP", "GETATTR", ...
func (o Op) String() string {
	if o < NumOps {
		return opNames[o]
	}
	return "INVALID"
}

// OpObserver is told how long each answered request took, from its
// arrival in the handler to its answer. It is called on every request,
// from the handler's goroutine: it must be cheap and must not allocate
// (an array of pre-resolved histograms indexed by Op is the intended
// shape).
type OpObserver interface {
	ObserveOp(op Op, d time.Duration)
}

// start returns the time a request started (runtime.nanotime: the
// monotonic clock alone, one vDSO call where time.Now makes two), if
// anyone observes requests.
func (s *Server) start() int64 {
	if s.opts.Observer == nil {
		return 0
	}
	return nanotime()
}

// exit ends a request that enter counted: it is no longer live, and the
// observer is told how long it took.
func (s *Server) exit(op Op, start int64) {
	s.live.Put()
	if o := s.opts.Observer; o != nil {
		o.ObserveOp(op, time.Duration(nanotime()-start))
	}
}

// nanotime is the runtime's monotonic clock, which time.Since reads too
// (Go 1.23+ keeps it reachable by linkname; go.dev/issue/67401).
//
//go:linkname nanotime runtime.nanotime
func nanotime() int64
