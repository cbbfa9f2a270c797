package state

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// A frame is a 4-byte little-endian payload length, the payload's CRC-32C
// (4 bytes little-endian), and the payload.
const frameHeader = 8

// maxFrame bounds one payload (a snapshot of a full namespace fits).
const maxFrame = 1 << 30

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendFrame appends payload, framed, to b.
func appendFrame(b, payload []byte) []byte {
	var h [frameHeader]byte
	binary.LittleEndian.PutUint32(h[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:8], crc32.Checksum(payload, castagnoli))
	b = append(b, h[:]...)
	return append(b, payload...)
}

var (
	// errTorn: the data ends inside a frame (or in zeros): an append that
	// a crash cut short.
	errTorn = errors.New("torn frame")
	// errCorrupt: a complete frame whose checksum does not match.
	errCorrupt = errors.New("checksum mismatch")
)

// nextFrame returns the payload of the frame at the start of b and the
// frame's length. errTorn if b ends inside the frame or the header is
// zeros (a preallocated or zero-filled tail), errCorrupt if the checksum
// is wrong.
func nextFrame(b []byte) (payload []byte, n int, err error) {
	if len(b) < frameHeader {
		return nil, 0, errTorn
	}
	size := binary.LittleEndian.Uint32(b[0:4])
	sum := binary.LittleEndian.Uint32(b[4:8])
	if size == 0 && sum == 0 {
		return nil, 0, errTorn
	}
	if size > maxFrame {
		return nil, 0, errCorrupt
	}
	if uint64(len(b)-frameHeader) < uint64(size) {
		return nil, 0, errTorn
	}
	payload = b[frameHeader : frameHeader+int(size)]
	if crc32.Checksum(payload, castagnoli) != sum {
		return nil, 0, errCorrupt
	}
	return payload, frameHeader + int(size), nil
}
