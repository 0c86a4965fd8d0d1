package guest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/wire"
)

// FuzzGuestFrames decodes an arbitrary stream as the host's reader does
// for a guest it does not trust: wire frames, a channel number, Window
// increments, data and control frames queued in per-channel inboxes, and
// Open requests as the agent decodes them. Nothing may panic, and no inbox
// may hold more than the window it granted, whatever the guest sends.
func FuzzGuestFrames(f *testing.F) {
	var b bytes.Buffer
	w := wire.NewWriter(&b)
	w.WriteFrame(Hello, helloPayload(make([]byte, nonceLen)))
	w.WriteFrame(wire.Stdout, putChan(1, []byte("out")))
	w.WriteFrame(wire.Stderr, putChan(2, bytes.Repeat([]byte("e"), 1000)))
	w.WriteFrame(Window, putChan(1, encodeWindow(4096)))
	w.WriteFrame(wire.Resize, putChan(1, wire.EncodeResize(24, 80)))
	w.WriteFrame(wire.Exit, putChan(1, wire.EncodeExit(3)))
	w.WriteFrame(Open, putChan(3, []byte(`{"op":"exec","process":{"args":["sh"]}}`)))
	f.Add(b.Bytes())
	f.Add([]byte{byte(wire.Stdout), 0, 0, 0, 2, 0, 1})
	f.Add([]byte{byte(Window), 0, 0, 0, 4, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		inboxes := map[uint32]*inbox{}
		for {
			typ, p, err := wire.ReadFrame(r)
			if err != nil {
				break
			}
			if typ == Hello {
				continue
			}
			id, body, err := splitChan(p)
			if err != nil {
				break
			}
			if !bytes.Equal(putChan(id, body), p) {
				t.Fatalf("channel frame %q does not round-trip", p)
			}
			switch typ {
			case Window:
				if _, err := decodeWindow(body); err != nil {
					break
				}
				continue
			case Open:
				var req Request
				_ = json.Unmarshal(body, &req)
				continue
			}
			in := inboxes[id%4]
			if in == nil {
				in = newInbox(func(uint32) {})
				inboxes[id%4] = in
			}
			_ = in.put(frame{typ, body})
			if q := in.queuedBytes(); q > windowSize {
				t.Fatalf("an inbox holds %d bytes, more than the %d window", q, windowSize)
			}
			in.mu.Lock()
			n := len(in.q)
			in.mu.Unlock()
			// Each queued data frame costs at least dataFrameCost of
			// the window; control frames are coalesced or final.
			if n > windowSize/dataFrameCost+4 {
				t.Fatalf("an inbox holds %d frames", n)
			}
		}
	})
}

// FuzzScanFor checks the resynchronising scan against bytes.Index: it
// consumes the stream exactly through the first occurrence of the
// pattern, or fails when there is none.
func FuzzScanFor(f *testing.F) {
	f.Add([]byte("xxhellohello"), []byte("hello"))
	f.Add([]byte("aaab"), []byte("aab"))
	f.Add([]byte("abababc"), []byte("ababc"))
	f.Add(append([]byte("junk"), helloHeader()...), helloHeader())
	f.Fuzz(func(t *testing.T, stream, pattern []byte) {
		if len(pattern) == 0 {
			return
		}
		src := bytes.NewReader(stream)
		r := bufio.NewReader(src)
		err := scanFor(r, pattern)
		i := bytes.Index(stream, pattern)
		if i < 0 {
			if err == nil {
				t.Fatalf("scanFor found %q in %q", pattern, stream)
			}
			return
		}
		if err != nil {
			t.Fatalf("scanFor missed %q at %d in %q: %v", pattern, i, stream, err)
		}
		if left := r.Buffered() + src.Len(); left != len(stream)-i-len(pattern) {
			t.Fatalf("scanFor left %d bytes of %q after %q, want %d", left, stream, pattern, len(stream)-i-len(pattern))
		}
	})
}
