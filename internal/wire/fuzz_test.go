package wire

import (
	"bytes"
	"testing"
)

// FuzzReadFrame reads frames from arbitrary bytes: no panic, no payload
// over MaxPayload, and every frame read writes back as the same bytes.
func FuzzReadFrame(f *testing.F) {
	var b bytes.Buffer
	w := NewWriter(&b)
	w.WriteFrame(Stdout, []byte("hello"))
	w.WriteFrame(Resize, EncodeResize(24, 80))
	w.WriteFrame(Exit, EncodeExit(-1))
	f.Add(b.Bytes())
	f.Add([]byte{byte(Stdin), 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{byte(Stdin), 0, 0, 0, 9, 'x'})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			typ, p, err := ReadFrame(r)
			if err != nil {
				return
			}
			if len(p) > MaxPayload {
				t.Fatalf("payload of %d bytes", len(p))
			}
			var out bytes.Buffer
			if err := NewWriter(&out).WriteFrame(typ, p); err != nil {
				t.Fatal(err)
			}
			t2, p2, err := ReadFrame(&out)
			if err != nil || t2 != typ || !bytes.Equal(p, p2) {
				t.Fatalf("frame %d %q does not round-trip: %d %q %v", typ, p, t2, p2, err)
			}
			switch typ {
			case Resize:
				if rows, cols, err := DecodeResize(p); err == nil && !bytes.Equal(EncodeResize(rows, cols), p) {
					t.Fatalf("resize %q does not round-trip", p)
				}
			case Exit:
				if code, err := DecodeExit(p); err == nil && !bytes.Equal(EncodeExit(code), p) {
					t.Fatalf("exit %q does not round-trip", p)
				}
			}
		}
	})
}
