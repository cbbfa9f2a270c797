package fs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/devfsd/devfsd/dcache"
)

// Serving a mount across processes (DESIGN.md section 9).
//
// A FUSE connection lives as long as a process holds a descriptor of its
// /dev/fuse file. To hand a mount to a successor, the serving process
// Stops its server (no request is read any more; those being handled are
// answered, or after a bounded wait left to the kernel), takes its
// Handover (a duplicate of the descriptor, of each special mount's root,
// and the MountState: the kernel's INIT, the negotiated capabilities and
// the node ids the kernel holds with their lookup counts), and passes it
// to the successor, which makes a Server over the same namespace (imported
// with dcache.Import, so inode numbers and generation are the same) and
// Resumes it. Resume sends FUSE_NOTIFY_RESEND before it reads anything:
// the kernel queues again every request that was read and not answered,
// so a request the old process gave up on is answered by the new one. (A
// resend while the server handles a request would requeue that one too,
// and it would be carried out twice.) The old process then calls
// HandedOver and exits without unmounting anything. If the successor
// fails first, the old process Continues.
//
// Node ids: the successor's table starts with the predecessor's ids and
// counts, so FORGET arithmetic goes on exactly; an id the table lost count
// of (a successor after a crash, which knows no counts) is still found,
// through the imported namespace (nodeTable.get). File handles are inode
// numbers (handles.go), so a file opened before the switch reads and
// writes the same node after it, unlinked or not, and its RELEASE closes
// the open the export counted. Directories have no handles.
//
// Requests answered by the old process after it stopped reading (it waits
// at most the Stop context) are answered once. A request it gave up on is
// answered by the successor after the resend; if the old one had already
// made the change (a mknod waiting for the journal), the successor makes
// it again on a namespace that has it: the caller sees EEXIST. On a kernel
// without HAS_RESEND (before 6.9) those requests are never sent again:
// their callers wait until the mount goes, or until a signal, whose
// FUSE_INTERRUPT the successor answers by ending the request with EINTR
// (third_party/go-fuse, orphans.go).

// MountState is what a successor needs, besides the descriptors, to serve
// a mount: see Server.Handover. It is plain data (JSON).
type MountState struct {
	Mountpoint string `json:"mountpoint"`
	// Direct: mounted with mount(2), not fusermount3 (how it unmounts).
	Direct bool `json:"direct"`
	// Init is the kernel's INIT request, and Flags the capabilities the
	// first server negotiated from it; a successor whose options
	// negotiate other capabilities refuses to serve.
	Init  []byte `json:"init"`
	Flags uint64 `json:"flags"`
	// IDs are the node ids the kernel holds (the root excluded), with
	// the kernel's lookup count of each; nil means unknown (after a
	// crash): every node of the namespace is then kept for good.
	IDs []NodeCount `json:"ids"`
	// Specials are the special mounts on the mount (pts, shm), whose
	// root descriptors follow the connection's in the Handover's files.
	Specials []SpecialState `json:"specials,omitempty"`
}

// NodeCount is a node id and the kernel's lookup count of it.
type NodeCount struct {
	ID    uint64 `json:"id"`
	Count uint64 `json:"count"`
}

// SpecialState is one special mount of a MountState.
type SpecialState struct {
	Name   string `json:"name"`
	FSType string `json:"fstype"`
	Target string `json:"target"`
}

// conservativeCount is the lookup count given to every node when the
// kernel's counts are unknown: no sequence of FORGETs brings it to zero.
const conservativeCount = 1 << 48

// EncodeInit returns init (the kernel's INIT request) as MountState.Init
// carries it.
func encodeInit(init *fuse.InitIn) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, init) // fixed-size: cannot fail
	return b.Bytes()
}

func decodeInit(b []byte) (fuse.InitIn, error) {
	var in fuse.InitIn
	if len(b) != binary.Size(in) {
		return in, fmt.Errorf("fs: the INIT of a handover has %d bytes, want %d", len(b), binary.Size(in))
	}
	err := binary.Read(bytes.NewReader(b), binary.LittleEndian, &in)
	return in, err
}

// Stop stops the server reading requests, for a handover: the
// connection stays open, and the requests being handled are answered
// until ctx ends; it returns how many were still running then, whose
// replies will not be written (a successor's Resume has the kernel resend them).
// Notifies and the sweep go on. Continue undoes it.
func (s *Server) Stop(ctx context.Context) (dropped int, err error) {
	if s.srv == nil {
		return 0, errors.New("fs: Stop before Mount")
	}
	return s.srv.StopServing(ctx)
}

// Continue serves again after Stop (the successor failed). The kernel is
// asked first, while nothing is read, to resend what is unanswered: what
// Stop left, and what a successor that failed read and dropped.
func (s *Server) Continue() error {
	if st := s.srv.NotifyResend(); st != fuse.OK && st != fuse.ENOSYS {
		return fmt.Errorf("fs: resend after a stop: %v", st)
	}
	return s.srv.RestartServing()
}

// Handover returns what a successor needs to serve the mount: its state
// and the descriptors (the connection's, then one per special), which the
// caller passes on and closes. For an upgrade the server is stopped
// first (Stop), so that the node counts are final. A descriptor kept for
// a restart after a crash (a keeper, systemd's store) may be taken while
// the server serves: its IDs are then a snapshot, to be set nil (every
// node kept) when a successor resumes from it.
func (s *Server) Handover() (MountState, []*os.File, error) {
	if s.srv == nil {
		return MountState{}, nil, errors.New("fs: Handover before Mount")
	}
	st := MountState{
		Mountpoint: s.mountpoint, Direct: s.direct,
		Init: encodeInit(s.srv.KernelSettings()), Flags: s.srv.NegotiatedFlags(),
		IDs: []NodeCount{},
	}
	s.nodes.each(func(id uint64, _ *dcache.Node, c uint64) {
		st.IDs = append(st.IDs, NodeCount{ID: id, Count: c})
	})
	fd, err := s.srv.DupFd()
	if err != nil {
		return MountState{}, nil, fmt.Errorf("fs: handover of %s: %w", s.mountpoint, err)
	}
	files := []*os.File{os.NewFile(uintptr(fd), "/dev/fuse")}
	s.specialsMu.Lock()
	defer s.specialsMu.Unlock()
	if sp := s.specials; sp != nil {
		sp.mu.Lock()
		defer sp.mu.Unlock()
		for _, m := range sp.mounted {
			nfd, err := unix.FcntlInt(m.root.Fd(), unix.F_DUPFD_CLOEXEC, 0)
			if err != nil {
				for _, f := range files {
					f.Close()
				}
				return MountState{}, nil, fmt.Errorf("fs: handover of %s: %w", m.target, err)
			}
			files = append(files, os.NewFile(uintptr(nfd), m.target))
			st.Specials = append(st.Specials, SpecialState{Name: m.name, FSType: m.fstype, Target: m.target})
		}
	}
	return st, files, nil
}

// CanResend reports whether the kernel resends what a stopped server
// left unanswered (HAS_RESEND, Linux 6.9+). Without it, a request left
// unanswered at a Stop is never answered: stop with a deadline as long
// as the longest request may take.
func (s *Server) CanResend() bool {
	return s.srv != nil && s.srv.NegotiatedFlags()&fuse.CAP_HAS_RESEND != 0
}

// Unlinked returns the nodes the kernel holds that have no name any more
// (open files that were unlinked), for dcache.Namespace.Export.
func (s *Server) Unlinked() []*dcache.Node {
	var out []*dcache.Node
	s.nodes.each(func(_ uint64, n *dcache.Node, _ uint64) {
		if n.Attr().Nlink == 0 {
			out = append(out, n)
		}
	})
	return out
}

// HandedOver ends a stopped server whose mount a successor serves now:
// this process's descriptor is closed, and Shutdown leaves the mount and
// its specials to the successor (it only stops the workers).
func (s *Server) HandedOver() error {
	if err := s.srv.Detach(); err != nil {
		return err
	}
	s.handedOver.Store(true)
	s.specialsMu.Lock()
	sp := s.specials
	s.specials = nil
	s.specialsShut = true
	s.specialsMu.Unlock()
	if sp != nil {
		sp.mu.Lock()
		for _, m := range sp.mounted {
			pins.remove(m.node)
			m.root.Close() // the mount stays: the successor holds its own descriptor
		}
		sp.mounted, sp.closed = nil, true
		sp.mu.Unlock()
	}
	return nil
}

// Resume serves a mount a predecessor served, from st and its files (the
// connection's descriptor, then one per special; Resume takes them, on
// error too), instead of Mount. The namespace should be the
// predecessor's, imported (dcache.Import). The kernel is asked to resend
// what the predecessor left unanswered before anything is read; the
// server serves once Resume returns nil.
func (s *Server) Resume(st MountState, files []*os.File) (err error) {
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
		}
	}()
	if s.srv != nil {
		return errors.New("fs: already mounted")
	}
	if len(files) != 1+len(st.Specials) {
		return fmt.Errorf("fs: resume of %s: %d descriptors, want %d", st.Mountpoint, len(files), 1+len(st.Specials))
	}
	init, err := decodeInit(st.Init)
	if err != nil {
		return err
	}
	fd, err := unix.FcntlInt(files[0].Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fs: resume of %s: %w", st.Mountpoint, err)
	}
	srv, err := fuse.ResumeServer(s, fd, st.Mountpoint, init, s.mountOptions(st.Direct))
	if err != nil {
		unix.Close(fd)
		return fmt.Errorf("fs: resume of %s: %w", st.Mountpoint, err)
	}
	files[0].Close()
	if got := srv.NegotiatedFlags(); got != st.Flags {
		// Serve only to end: Detach makes it close the descriptor.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		srv.StopServing(ctx) //nolint:errcheck // nothing was read: nothing to drop
		srv.Detach()
		go srv.Serve()
		return fmt.Errorf("fs: resume of %s: this server's options negotiate capabilities %#x, the kernel was given %#x",
			st.Mountpoint, got, st.Flags)
	}
	ns := s.ns
	if st.IDs == nil {
		s.adoptAll()
	} else {
		lost := 0
		for _, c := range st.IDs {
			n := ns.ImportedNode(c.ID)
			if n == nil {
				lost++
				continue
			}
			s.nodes.adopt(n, c.Count)
		}
		if lost > 0 {
			s.log.Warn("resume: node ids the kernel holds that the namespace lacks (answered ESTALE)", zap.Int("ids", lost))
		}
	}
	sp := &Specials{log: s.log.Named("specials")}
	for i, ss := range st.Specials {
		f := files[1+i]
		m := &special{name: ss.Name, fstype: ss.FSType, target: ss.Target, root: f}
		if n, err := ns.Resolve(ss.Name); err == nil && n.IsDir() {
			m.node = n
			pins.add(n)
		}
		sp.mounted = append(sp.mounted, m)
	}
	files = nil // taken
	s.resumed.Store(true)
	s.nq.inheritListings()               // the kernel may hold listings the old process served
	s.nq.inheritAbsences(s.negTimeout()) // and its negative entries
	s.srv = srv
	s.mountpoint = st.Mountpoint
	s.direct = st.Direct
	s.specials = sp
	s.nq.enable()
	go func() {
		defer close(s.notifyDone)
		s.nq.run(srv, s.log.Named("notify"))
	}()
	if s.view == nil {
		s.sweep = startSweeper(s.ns, s.log.Named("sweep"), nil)
	}
	if !resendAfterServe {
		s.resend(srv)
	}
	go func() {
		defer close(s.served)
		srv.Serve()
	}()
	s.log.Info("serving a mount handed over", zap.String("mountpoint", st.Mountpoint),
		zap.Int("node_ids", int(s.nodes.len())), zap.Int("specials", len(st.Specials)))
	return nil
}

// ResendLate is the resend of mutant U1 (resend_mutant_u1.go): once the
// server serves and handles a request, which is requeued too. Otherwise a
// no-op.
func (s *Server) ResendLate() {
	if resendAfterServe && s.srv != nil {
		u1AwaitRequest(s)
		s.resend(s.srv)
	}
}

// resend asks the kernel to send again what the predecessor read and did
// not answer.
func (s *Server) resend(srv *fuse.Server) {
	switch st := srv.NotifyResend(); st {
	case fuse.OK:
	case fuse.ENOSYS:
		s.log.Warn("the kernel cannot resend requests (no FUSE_HAS_RESEND, Linux < 6.9): requests the predecessor left unanswered stay so until their callers get a signal (then EINTR)")
	default:
		s.log.Error("resend: the kernel refused", zap.Stringer("status", st))
	}
}

// adoptAll keeps every node of the namespace in the table for good: the
// kernel's counts are unknown.
func (s *Server) adoptAll() {
	queue := []*dcache.Node{s.ns.Root()}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		var off uint64
		for {
			ents, err := d.ReadDir(off, 256)
			if err != nil || len(ents) == 0 {
				break
			}
			for _, e := range ents {
				off = e.Cookie
				if e.Name == "." || e.Name == ".." {
					continue
				}
				n, err := d.Lookup(e.Name)
				if err != nil {
					continue
				}
				s.nodes.adopt(n, conservativeCount)
				if n.IsDir() {
					queue = append(queue, n)
				}
			}
		}
	}
}

// handoverStop bounds the wait for the requests being handled at a Stop
// when the caller gives no deadline.
const handoverStop = 500 * time.Millisecond

// DefaultStopTimeout is how long a handover's Stop waits, by default, for
// the requests being handled to be answered.
const DefaultStopTimeout = handoverStop
