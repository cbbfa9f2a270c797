// Package kernel is devfsd's kernel device source (DESIGN.md sections 5
// and 8): the namespace shows the devices the machine has, as devtmpfs
// does, with devfs's lookup-driven module load on top.
//
//   - Coldplug ([Source.Start], [Source.Coldplug]): every device of
//     /sys/dev/char and /sys/dev/block is registered from its uevent file
//     (DEVNAME with its subdirectories, MAJOR, MINOR, DEVMODE, DEVUID,
//     DEVGID; block or char from the directory). sysfs is only read.
//   - Hotplug: the kernel's uevents (NETLINK_KOBJECT_UEVENT, group 1) are
//     applied as they come, each device's in the kernel's order (SEQNUM;
//     an older uevent of a device arriving after a newer one is stale,
//     see [Source.Apply]): add registers,
//     remove unregisters, change raises CHANGE, move renames, bind and
//     unbind update the device's DRIVER. Only messages the kernel sent
//     count: source port 0, credentials of pid 0 and uid 0, group 1; any
//     other is counted (Stats.Forged) and ignored. A receive buffer
//     overrun (ENOBUFS: uevents lost) is counted, logged and answered by a
//     rescan of sysfs ([Source.Rescan]) once the socket's queue is
//     drained, which converges the namespace to the kernel's state.
//   - Module autoload ([Source.Load]): a lookup miss for a name that
//     modules.devname lists (or for a directory its names lie in: "net"
//     for net/tun) runs the modprobe program for its module (bounded in
//     time, in a process group of its own, through modload/exec's Runner;
//     concurrent loads of one module share one run) and waits, bounded by
//     the lookup's context, for the kernel's add of the name; any other
//     name is declined at once ([Source.Declines]).
//   - [Source.Info]: a device's properties (SUBSYSTEM, DEVPATH, DRIVER,
//     every uevent variable), for `devfsd ctl info`.
//
// A lookup miss first applies the uevents already queued on the socket
// (the kernel queues a device's uevent before the call that made the
// device returns), so the first lookup after LOOP_CTL_ADD sees the new
// device; see Source, "Catching up on a miss".
//
// As devtmpfs does, a directory the source made for a device's node
// (input/ for input/event0) is removed when its last device goes and it
// is empty; a directory a user made is never removed (Source,
// "Directories").
//
// Where the kernel gives no mode or owner, the node gets the built-in
// catalogue's (builtin.DefaultAttrs: the catalogue's node of that name,
// else its numbered family, else 0660 root:disk for a block device and
// 0600 root:root, devtmpfs's, for a character device), field by field.
//
// Input from the kernel is checked as hostile: a uevent that is not
// NUL-terminated, has a variable without '=', a key twice, an unknown
// action, a DEVPATH or DEVNAME that is absolute where it must be relative,
// has a ".." element, a control character or invalid UTF-8, or a number
// out of range, is refused whole and counted (Stats.Malformed).
//
// # The socket
//
// The netlink socket is golang.org/x/sys/unix alone. The libraries
// looked at do not fit: github.com/mdlayher/netlink frames every message
// as netlink messages (nlmsghdr), which kobject uevents are not, and
// github.com/pilebones/go-udev reads with read(2), so the sender's address
// and credentials — the forged-message check — are lost, and it neither
// forces the receive buffer nor reports ENOBUFS as an overrun. What the
// source needs is one socket, SO_RCVBUFFORCE, SO_PASSCRED and recvmsg:
// about a hundred lines over x/sys/unix, already a dependency. The
// socket is non-blocking and read through the runtime's poller
// (os.File.SyscallConn), so Close wakes the reader.
//
// # Using it
//
//	src, err := kernel.New(kernel.Options{Namespace: kernel.DcacheNamespace{NS: ns, Caller: c}, Logger: log})
//	err = src.Start()     // listen, coldplug, follow hotplug
//	defer src.Close()
//	// src is the loader: lookup.New(ns, adapt(src), ...), src.IsLoader for Options.IsLoader
package kernel
