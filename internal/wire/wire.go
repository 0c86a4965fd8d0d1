// Package wire frames several byte streams and control messages onto one
// connection. The API uses it for exec and attach; it is small and
// transport-agnostic so the microVM guest agent can speak it too.
//
// A frame is a 1-byte type, a 4-byte big-endian payload length, and the
// payload.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Type says what a frame carries.
type Type byte

// Frame types. Stdin, Resize and CloseStdin flow to the process; the rest
// flow from it.
const (
	Stdin      Type = 0 // bytes for the process's stdin
	Stdout     Type = 1
	Stderr     Type = 2
	Resize     Type = 3 // rows uint16, cols uint16
	Exit       Type = 4 // exit code int32; the last frame of a session
	Error      Type = 5 // UTF-8 message; the last frame of a failed session
	CloseStdin Type = 6 // no more stdin
)

// MaxPayload bounds one frame so a peer cannot make us allocate without limit.
const MaxPayload = 1 << 20

// ErrTooLarge is returned for a frame over MaxPayload.
var ErrTooLarge = errors.New("wire: frame larger than 1 MiB")

// Writer writes frames; it is safe for concurrent use.
type Writer struct {
	mu sync.Mutex
	w  io.Writer
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// WriteFrame writes one frame.
func (fw *Writer) WriteFrame(t Type, payload []byte) error {
	if len(payload) > MaxPayload {
		return ErrTooLarge
	}
	var hdr [5]byte
	hdr[0] = byte(t)
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if _, err := fw.w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := fw.w.Write(payload)
	return err
}

// Stream returns an io.Writer whose writes become frames of type t, split
// at MaxPayload.
func (fw *Writer) Stream(t Type) io.Writer { return streamWriter{fw, t} }

type streamWriter struct {
	fw *Writer
	t  Type
}

func (s streamWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), MaxPayload)]
		if err := s.fw.WriteFrame(s.t, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// ReadFrame reads one frame from r.
func ReadFrame(r io.Reader) (Type, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > MaxPayload {
		return 0, nil, ErrTooLarge
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, fmt.Errorf("wire: short frame: %w", err)
	}
	return Type(hdr[0]), p, nil
}

// EncodeResize encodes a terminal size for a Resize frame.
func EncodeResize(rows, cols uint16) []byte {
	var b [4]byte
	binary.BigEndian.PutUint16(b[0:], rows)
	binary.BigEndian.PutUint16(b[2:], cols)
	return b[:]
}

// DecodeResize decodes a Resize frame's payload.
func DecodeResize(p []byte) (rows, cols uint16, err error) {
	if len(p) != 4 {
		return 0, 0, fmt.Errorf("wire: resize frame of %d bytes, want 4", len(p))
	}
	return binary.BigEndian.Uint16(p[0:]), binary.BigEndian.Uint16(p[2:]), nil
}

// EncodeExit encodes an exit code for an Exit frame.
func EncodeExit(code int) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(int32(code)))
	return b[:]
}

// DecodeExit decodes an Exit frame's payload.
func DecodeExit(p []byte) (int, error) {
	if len(p) != 4 {
		return -1, fmt.Errorf("wire: exit frame of %d bytes, want 4", len(p))
	}
	return int(int32(binary.BigEndian.Uint32(p))), nil
}
