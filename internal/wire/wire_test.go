package wire

import (
	"bytes"
	"errors"
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
