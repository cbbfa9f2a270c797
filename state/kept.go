package state

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Kept is what a successor needs, beside the kept /dev/fuse descriptors,
// to serve the mounts of a daemon that died (DESIGN.md section 9): it
// lives in a memfd that the descriptor store keeps with them (package
// daemon's fdstore.go), so it outlives the process without a state
// directory.
type Kept struct {
	// Generation is the namespace's inode generation: the successor's
	// must be the same, or the kernel takes every id it holds for a
	// reused one and marks the inode bad.
	Generation uint64 `json:"generation"`
	// Ceiling: every node id the daemon has handed out, or may hand out
	// before it writes a higher ceiling, is below it. A successor hands
	// out only ids at or above it, so an id the kernel may hold is never
	// given to another node.
	Ceiling uint64 `json:"ceiling"`
	// Mounts are the kept mounts, the main one first.
	Mounts []KeptMount `json:"mounts"`
}

// KeptMount is one kept mount.
type KeptMount struct {
	// FD is the FDNAME its /dev/fuse descriptor is kept under, and
	// Specials those of its special mounts' descriptors (pts, shm), in
	// the order Server lists them.
	FD       string   `json:"fd"`
	Specials []string `json:"specials,omitempty"`
	// Mountpoint is where it is mounted.
	Mountpoint string `json:"mountpoint"`
	// Dev is the mount's device number, "major:minor" as the mount table
	// says: the successor checks that the mount is still there (and is
	// this connection's) without touching it.
	Dev string `json:"dev"`
	// Server is how package fs describes the mount to a successor (its
	// MountState: the kernel's INIT, the capabilities negotiated, the
	// special mounts), opaque here.
	Server json.RawMessage `json:"server"`
	// View, for a view, is its definition (package daemon's wire form);
	// empty for the main mount.
	View json.RawMessage `json:"view,omitempty"`
}

// A KeptFile is a memfd holding a Kept. It has two slots, each one frame
// (frame.go) of {"seq":N,"kept":{...}}; Write fills the slot not holding
// the latest, so a process killed during a write (a write to a memfd can
// stop short at a page when a fatal signal is pending) leaves the previous
// one whole, and Read takes the whole frame of the higher seq.
type KeptFile struct {
	mu  sync.Mutex // serialises Write
	f   *os.File
	seq uint64 // guarded by mu: the seq of the latest slot written
}

// keptSlot is each slot's size: the offset of slot 1, and the largest
// frame. The memfd is sparse: only what is written takes memory.
const keptSlot = 1 << 20

type keptFrame struct {
	Seq  uint64 `json:"seq"`
	Kept Kept   `json:"kept"`
}

// NewKeptFile makes an empty memfd for a Kept.
func NewKeptFile() (*KeptFile, error) {
	fd, err := unix.MemfdCreate("devfsd-kept", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("state: memfd_create: %w", err)
	}
	return &KeptFile{f: os.NewFile(uintptr(fd), "devfsd-kept")}, nil
}

// ErrNoKept is ReadKeptFile's error for a file that holds no whole Kept.
var ErrNoKept = errors.New("state: the kept file holds no whole record")

// ReadKeptFile reads the Kept in f (a kept memfd given back by the
// descriptor store); the KeptFile then owns f and writes go to it, so the
// store keeps seeing the latest.
func ReadKeptFile(f *os.File) (*KeptFile, Kept, error) {
	best := keptFrame{}
	found := false
	for slot := int64(0); slot < 2; slot++ {
		var h [frameHeader]byte
		if n, _ := f.ReadAt(h[:], slot*keptSlot); n < frameHeader {
			continue // an empty slot: the file ends before it
		}
		size := int(binary.LittleEndian.Uint32(h[0:4]))
		if size == 0 || size > keptSlot-frameHeader {
			continue
		}
		b := make([]byte, frameHeader+size)
		if n, _ := f.ReadAt(b, slot*keptSlot); n != len(b) {
			continue
		}
		payload, _, err := nextFrame(b)
		if err != nil {
			continue
		}
		var fr keptFrame
		if json.Unmarshal(payload, &fr) != nil {
			continue
		}
		if !found || fr.Seq > best.Seq {
			best, found = fr, true
		}
	}
	if !found {
		return nil, Kept{}, ErrNoKept
	}
	return &KeptFile{f: f, seq: best.Seq}, best.Kept, nil
}

// Write replaces the Kept: once it returns, a successor reading the file
// sees k.
func (kf *KeptFile) Write(k Kept) error {
	kf.mu.Lock()
	defer kf.mu.Unlock()
	payload, err := json.Marshal(keptFrame{Seq: kf.seq + 1, Kept: k})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	frame := appendFrame(nil, payload)
	if len(frame) > keptSlot {
		return fmt.Errorf("state: the kept record is %d bytes, more than %d", len(frame), keptSlot)
	}
	slot := int64((kf.seq + 1) % 2)
	if _, err := kf.f.WriteAt(frame, slot*keptSlot); err != nil {
		return fmt.Errorf("state: writing the kept record: %w", err)
	}
	kf.seq++
	return nil
}

// Fd is the memfd's descriptor, for the descriptor store.
func (kf *KeptFile) Fd() int { return int(kf.f.Fd()) }

// Close closes this process's descriptor (the store's stays).
func (kf *KeptFile) Close() error { return kf.f.Close() }
