package daemon

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"golang.org/x/sys/unix"
)

// The file descriptor store (systemd's, sd_notify(3) FDSTORE=1, or the one
// `devfsd keeper` keeps by the same protocol) holds the descriptors a
// successor needs to serve the mounts of a daemon that died: the
// /dev/fuse descriptor of every mount (the main one and each view) and a
// memfd of what goes with them (state.Kept: each mount's mountpoint, the
// kernel's INIT, the inode generation and the reserved id ceiling). They
// are given back to the next process through LISTEN_FDS and
// LISTEN_FDNAMES (sd_listen_fds_with_names(3)).
//
// Names, as FDNAME= (printable ASCII, no ':' — systemd's rule):
//
//	devfsd-kept      the memfd of state.Kept
//	devfsd-fuse-H    the /dev/fuse descriptor of the mount that state.Kept
//	                 lists under that name (H: 16 hex digits of the
//	                 SHA-256 of its mountpoint, so every process serving
//	                 the mount uses the same name)
//	devfsd-fuse-H-I  the descriptor of that mount's I-th special mount
//	                 (pts, shm: package fs keeps them to detach them)

// Names of kept descriptors.
const (
	keptFDName     = "devfsd-kept"
	fuseFDNameBase = "devfsd-fuse-"
)

// maxFDName is systemd's limit on an FDNAME.
const maxFDName = 255

// checkFDName refuses a name systemd would refuse.
func checkFDName(name string) error {
	if name == "" || len(name) > maxFDName {
		return fmt.Errorf("fd store: name %q: 1 to %d characters", name, maxFDName)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x20 || c > 0x7e || c == ':' {
			return fmt.Errorf("fd store: name %q: only printable ASCII other than ':'", name)
		}
	}
	return nil
}

// fdStore sends descriptors to the store behind $NOTIFY_SOCKET.
type fdStore struct {
	addr *unix.SockaddrUnix // "@name": abstract
}

// errNoStore: NOTIFY_SOCKET is not set, so nothing keeps descriptors.
var errNoStore = errors.New("fd store: NOTIFY_SOCKET is not set")

// newFDStore returns the store behind NOTIFY_SOCKET, or errNoStore.
func newFDStore() (*fdStore, error) {
	p := os.Getenv("NOTIFY_SOCKET")
	if p == "" {
		return nil, errNoStore
	}
	if !strings.HasPrefix(p, "/") && !strings.HasPrefix(p, "@") {
		return nil, fmt.Errorf("fd store: NOTIFY_SOCKET=%q is neither a path nor an abstract name (@...)", p)
	}
	return &fdStore{addr: &unix.SockaddrUnix{Name: p}}, nil
}

// send writes one datagram: state (sd_notify assignments, one a line) and
// fds as SCM_RIGHTS. The sender's credentials go with it (the kernel
// attaches them when the receiver asked for SO_PASSCRED, as systemd does).
func (s *fdStore) send(state string, fds []int) error {
	sock, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fd store: %w", err)
	}
	defer unix.Close(sock)
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if err := unix.Sendmsg(sock, []byte(state), oob, s.addr, 0); err != nil {
		return fmt.Errorf("fd store: sending %q: %w", firstLine(state), err)
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// Store gives fd to the store under name. Storing a name again adds one
// more descriptor under it: remove it first to replace it.
func (s *fdStore) Store(name string, fd int) error {
	if err := checkFDName(name); err != nil {
		return err
	}
	return s.send(fdStoreMessage(name, fd), []int{fd})
}

// fdStoreMessage is the FDSTORE=1 message that stores fd under name. An
// O_PATH descriptor (a special mount's root) cannot be polled, and
// systemd polls what it stores (to drop a descriptor that hangs up)
// unless told not to: it goes with FDPOLL=0 (systemd 246 and later).
func fdStoreMessage(name string, fd int) string {
	m := "FDSTORE=1\nFDNAME=" + name + "\n"
	if isOPath(fd) {
		m += "FDPOLL=0\n"
	}
	return m
}

// Remove takes every descriptor stored under name out of the store.
func (s *fdStore) Remove(name string) error {
	if err := checkFDName(name); err != nil {
		return err
	}
	return s.send("FDSTOREREMOVE=1\nFDNAME="+name+"\n", nil)
}

// inherited are the descriptors a daemon was started with through
// LISTEN_FDS, by name. A name given more than once keeps its first
// descriptor; the others are closed and reported in dups.
type inherited struct {
	files map[string]*os.File
	dups  []string
}

// takeInherited reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES (and
// unsets them, so that nothing this process starts sees them), marking
// every descriptor close-on-exec.
func takeInherited() *inherited {
	in := &inherited{files: map[string]*os.File{}}
	for _, f := range activation.Files(true) {
		if _, ok := in.files[f.Name()]; ok {
			in.dups = append(in.dups, f.Name())
			f.Close()
			continue
		}
		in.files[f.Name()] = f
	}
	return in
}

// take returns the descriptor named name and forgets it, or nil.
func (in *inherited) take(name string) *os.File {
	f := in.files[name]
	delete(in.files, name)
	return f
}

// rest returns the names of the descriptors not taken, and closes them.
func (in *inherited) rest() []string {
	var names []string
	for n, f := range in.files {
		names = append(names, n)
		f.Close()
	}
	clear(in.files)
	return names
}
