package kernel

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// kernelGroup is the multicast group of NETLINK_KOBJECT_UEVENT on which
// the kernel sends its uevents (udev's own rebroadcast is group 2).
const kernelGroup = 1

// DefaultReceiveBuffer is the receive buffer asked for the uevent socket
// (SO_RCVBUFFORCE; systemd-udevd asks 128 MiB). The kernel doubles the
// value for its bookkeeping.
const DefaultReceiveBuffer = 16 << 20

// recvBuffer is the largest message read at once; longer ones are
// truncated by the kernel (MSG_TRUNC) and refused.
const recvBuffer = 2 * MaxUevent

// errOverrun is returned by conn.recv when the kernel dropped messages
// because the receive buffer was full (ENOBUFS).
var errOverrun = errors.New("uevent socket overrun: the kernel dropped uevents")

// errAgain is returned by conn.recv when no message is queued.
var errAgain = errors.New("no uevent queued")

// sender is who sent a message, as the socket says.
type sender struct {
	portID  uint32 // nl_pid of the source address: 0 for the kernel
	creds   bool   // whether SCM_CREDENTIALS came with the message
	pid     int32  // SCM_CREDENTIALS
	uid     uint32 // SCM_CREDENTIALS
	group   uint32 // nl_groups of the source address
	trunc   bool   // MSG_TRUNC: the message did not fit
	addrErr bool   // the source address was not a netlink address
}

// fromKernel reports whether the message was sent by the kernel: source
// port 0 (no user socket can have it), credentials of pid 0 and uid 0
// (the kernel's; a process sending as root has its own pid), and sent to
// the kernel's group. Both checks, as systemd's sd-device monitor does.
func (s sender) fromKernel() bool {
	return !s.addrErr && s.portID == 0 && s.creds && s.pid == 0 && s.uid == 0 && s.group == kernelGroup
}

// conn is a NETLINK_KOBJECT_UEVENT socket bound to the kernel's group,
// non-blocking. Its messages are read with recv, inside rc.Read (the
// reader, which waits for readiness between reads) or rc.Control (a
// lookup miss catching up, which never waits); Close may be called from
// any goroutine and wakes a reader waiting in rc.Read.
type conn struct {
	f  *os.File
	rc syscall.RawConn
	// buf and oob are recv's; guarded by Source.mu, under which every
	// recv runs.
	buf []byte
	oob []byte
}

// dial opens the socket with a receive buffer of rcvbuf bytes: forced
// (SO_RCVBUFFORCE, which needs CAP_NET_ADMIN), else as large as
// net.core.rmem_max allows (SO_RCVBUF).
func dial(rcvbuf int) (*conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("kernel: uevent socket: %w", err)
	}
	fail := func(what string, err error) (*conn, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("kernel: uevent socket: %s: %w", what, err)
	}
	if rcvbuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf); err != nil {
				return fail("SO_RCVBUF", err)
			}
		}
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		return fail("SO_PASSCRED", err)
	}
	// Port id 0: the kernel picks a unique one.
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: kernelGroup}); err != nil {
		return fail("bind", err)
	}
	f := os.NewFile(uintptr(fd), "uevent-netlink")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("kernel: uevent socket: %w", err)
	}
	return &conn{f: f, rc: rc, buf: make([]byte, recvBuffer), oob: make([]byte, unix.CmsgSpace(unix.SizeofUcred))}, nil
}

// recv reads the next queued message of the socket fd (from rc.Read or
// rc.Control) without waiting (MSG_DONTWAIT) and returns it with its
// sender; the message is valid until the next recv. errAgain when nothing
// is queued, errOverrun when the kernel dropped messages (it reports that
// once, before the messages still queued). Preconditions: Source.mu held.
func (c *conn) recv(fd uintptr) ([]byte, sender, error) {
	n, oobn, flags, from, err := unix.Recvmsg(int(fd), c.buf, c.oob, unix.MSG_DONTWAIT)
	switch {
	case err == unix.EAGAIN:
		return nil, sender{}, errAgain
	case err == unix.ENOBUFS:
		return nil, sender{}, errOverrun
	case err != nil:
		return nil, sender{}, fmt.Errorf("kernel: uevent socket: %w", err)
	}
	var s sender
	if sa, ok := from.(*unix.SockaddrNetlink); ok {
		s.portID, s.group = sa.Pid, sa.Groups
	} else {
		s.addrErr = true
	}
	s.trunc = flags&unix.MSG_TRUNC != 0
	if msgs, err := unix.ParseSocketControlMessage(c.oob[:oobn]); err == nil {
		for _, m := range msgs {
			if cred, err := unix.ParseUnixCredentials(&m); err == nil {
				s.creds, s.pid, s.uid = true, cred.Pid, cred.Uid
			}
		}
	}
	return c.buf[:n], s, nil
}

// Close closes the socket; a recv blocked in another goroutine returns
// with an error.
func (c *conn) Close() error { return c.f.Close() }
