package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	big := bytes.Repeat([]byte("x"), MaxPayload+10)
	if _, err := w.Stream(Stdout).Write(big); err != nil {
		t.Fatal(err)
	}
	w.WriteFrame(Resize, EncodeResize(40, 120))
	w.WriteFrame(Exit, EncodeExit(-3))

	var got []byte
	for i := 0; i < 2; i++ {
		typ, p, err := ReadFrame(&buf)
		if err != nil || typ != Stdout {
			t.Fatalf("frame %d: %v %v", i, typ, err)
		}
		got = append(got, p...)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("stdout split/joined wrong: %d bytes, want %d", len(got), len(big))
	}
	typ, p, _ := ReadFrame(&buf)
	if rows, cols, err := DecodeResize(p); typ != Resize || err != nil || rows != 40 || cols != 120 {
		t.Fatalf("resize: %v %d %d %v", typ, rows, cols, err)
	}
	typ, p, _ = ReadFrame(&buf)
	if code, err := DecodeExit(p); typ != Exit || err != nil || code != -3 {
		t.Fatalf("exit: %v %d %v", typ, code, err)
	}
}

func TestRejectsHugeFrame(t *testing.T) {
	hdr := []byte{byte(Stdin), 0xff, 0xff, 0xff, 0xff}
	if _, _, err := ReadFrame(bytes.NewReader(hdr)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
	if err := NewWriter(&bytes.Buffer{}).WriteFrame(Stdin, make([]byte, MaxPayload+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("writer: got %v", err)
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// frame returns a whole frame by hand: header and payload.
func frame(t Type, payload []byte) []byte {
	hdr := []byte{byte(t), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(payload)))
	return append(hdr, payload...)
}

// TestFrameLimitIsExact: a frame of MaxPayload bytes is read and written,
// one byte more is refused on both sides, and the reader refuses it from
// the header, before reading (or allocating for) its payload.
func TestFrameLimitIsExact(t *testing.T) {
	atLimit := bytes.Repeat([]byte("a"), MaxPayload)
	typ, p, err := ReadFrame(bytes.NewReader(frame(Stdout, atLimit)))
	if err != nil || typ != Stdout || !bytes.Equal(p, atLimit) {
		t.Fatalf("a frame of MaxPayload bytes: type %v, %d bytes, %v", typ, len(p), err)
	}
	var buf bytes.Buffer
	if err := NewWriter(&buf).WriteFrame(Stdout, atLimit); err != nil || !bytes.Equal(buf.Bytes(), frame(Stdout, atLimit)) {
		t.Fatalf("writing a frame of MaxPayload bytes: %v (%d bytes written)", err, buf.Len())
	}

	over := append(atLimit, 'b')
	r := &countingReader{r: bytes.NewReader(frame(Stdout, over))}
	if _, _, err := ReadFrame(r); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("a whole frame of MaxPayload+1 bytes: %v, want ErrTooLarge", err)
	}
	if r.n != 5 {
		t.Errorf("ReadFrame read %d bytes of a frame over the limit, want only its 5-byte header", r.n)
	}
	buf.Reset()
	if err := NewWriter(&buf).WriteFrame(Stdout, over); !errors.Is(err, ErrTooLarge) || buf.Len() != 0 {
		t.Fatalf("writing MaxPayload+1 bytes: %v, %d bytes written; want ErrTooLarge and nothing", err, buf.Len())
	}
}

// TestStreamSplitsAtTheLimit: a stream write is cut into frames of
// MaxPayload bytes, the last one holding the rest, and an empty write
// sends no frame.
func TestStreamSplitsAtTheLimit(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf).Stream(Stderr)
	data := bytes.Repeat([]byte("0123456789"), (2*MaxPayload+7)/10+1)[:2*MaxPayload+7]
	if n, err := w.Write(data); err != nil || n != len(data) {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(data))
	}
	if n, err := w.Write(nil); err != nil || n != 0 {
		t.Fatalf("Write(nil) = %d, %v", n, err)
	}
	var sizes []int
	var got []byte
	for buf.Len() > 0 {
		typ, p, err := ReadFrame(&buf)
		if err != nil || typ != Stderr {
			t.Fatalf("frame %d: %v %v", len(sizes), typ, err)
		}
		sizes = append(sizes, len(p))
		got = append(got, p...)
	}
	if len(sizes) != 3 || sizes[0] != MaxPayload || sizes[1] != MaxPayload || sizes[2] != 7 {
		t.Errorf("frame sizes %v, want [%d %d 7]", sizes, MaxPayload, MaxPayload)
	}
	if !bytes.Equal(got, data) {
		t.Error("the frames do not join back into the data written")
	}
}

// TestShortAndBadFrames: a frame cut short is an error, not a shorter
// payload, and resize and exit payloads of the wrong size are refused.
func TestShortAndBadFrames(t *testing.T) {
	if _, _, err := ReadFrame(bytes.NewReader(frame(Stdout, []byte("hello"))[:7])); err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a cut payload: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, _, err := ReadFrame(bytes.NewReader([]byte{byte(Stdout), 0, 0})); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a cut header: %v, want io.ErrUnexpectedEOF", err)
	}
	if _, _, err := ReadFrame(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("no frame at all: %v, want io.EOF", err)
	}
	if typ, p, err := ReadFrame(bytes.NewReader(frame(CloseStdin, nil))); err != nil || typ != CloseStdin || len(p) != 0 {
		t.Errorf("an empty frame: %v %q %v", typ, p, err)
	}
	for _, p := range [][]byte{nil, {1, 2, 3}, {1, 2, 3, 4, 5}} {
		if _, _, err := DecodeResize(p); err == nil {
			t.Errorf("DecodeResize(%v) accepted", p)
		}
		if code, err := DecodeExit(p); err == nil || code != -1 {
			t.Errorf("DecodeExit(%v) = %d, %v", p, code, err)
		}
	}
	if code, err := DecodeExit(EncodeExit(255)); err != nil || code != 255 {
		t.Errorf("exit 255: %d %v", code, err)
	}
}
