package guest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/wire"
)

// gatedWriter stands in for a consumer that has stopped reading, such as
// the HTTP client of an exec: its writes wait until open is closed.
type gatedWriter struct {
	open chan struct{}
	mu   sync.Mutex
	n    int
}

func (g *gatedWriter) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	g.n += len(p)
	g.mu.Unlock()
	return len(p), nil
}

// stalled says whether some session of a waits for its host to grant
// window.
func (a *Agent) stalled() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.sessions {
		if s.out.stalled() {
			return true
		}
	}
	return false
}

type execResult struct {
	code int
	err  error
}

// A guest that writes faster than the host's consumer reads makes the host
// queue no more than the window; other channels go on meanwhile, and the
// output arrives whole once the consumer reads again.
func TestSlowConsumerBounded(t *testing.T) {
	ta := startAgent(t)
	c := connect(t, ta.host)
	const total = 8 << 20 // 32 windows
	out := &gatedWriter{open: make(chan struct{})}
	res := make(chan execResult, 1)
	go func() {
		code, err := c.Exec(ctx(t), Process{Args: []string{"head", "-c", "8388608", "/dev/zero"}}, driver.IO{Stdout: out})
		res <- execResult{code, err}
	}()
	// The guest has sent all the window lets it and waits: from here on,
	// only the host's consumer can move this channel.
	testutil.WaitFor(t, waitLimit, "the exec's output to wait for window", ta.agent.stalled)

	var other bytes.Buffer
	if code, err := c.Exec(ctx(t), Process{Args: []string{"echo", "other channel"}}, driver.IO{Stdout: &other}); err != nil || code != 0 || other.String() != "other channel\n" {
		t.Errorf("exec beside a stalled channel = %d, %v, %q", code, err, other.String())
	}
	if err := c.Ping(ctx(t)); err != nil {
		t.Errorf("ping beside a stalled channel: %v", err)
	}
	select {
	case r := <-res:
		t.Fatalf("the stalled exec ended before its consumer read: %d, %v", r.code, r.err)
	default:
	}
	if !ta.agent.stalled() {
		t.Error("the stalled channel moved while its consumer did not read")
	}

	close(out.open)
	r := <-res
	if r.err != nil || r.code != 0 || out.n != total {
		t.Fatalf("exec = %d, %v, %d bytes; want 0, nil, %d", r.code, r.err, out.n, total)
	}
	peak := c.peakQueued.Load()
	if peak > windowSize {
		t.Errorf("the host queued %d bytes of one channel, over the window of %d", peak, windowSize)
	}
	if peak < windowSize/2 {
		t.Errorf("the host queued at most %d bytes; the test never filled the window", peak)
	}
}

// Stdin bigger than both windows goes through cat and back whole: window
// updates flow both ways and neither end waits for the other forever.
func TestLargeStdinRoundTrip(t *testing.T) {
	ta := startAgent(t)
	c := connect(t, ta.host)
	in := bytes.Repeat([]byte("0123456789abcdef"), 4<<20/16)
	var out bytes.Buffer
	code, err := c.Exec(ctx(t), Process{Args: []string{"cat"}}, driver.IO{Stdin: bytes.NewReader(in), Stdout: &out})
	if err != nil || code != 0 || !bytes.Equal(out.Bytes(), in) {
		t.Fatalf("cat of %d bytes = %d, %v, %d bytes back", len(in), code, err, out.Len())
	}
	if peak := c.peakQueued.Load(); peak > windowSize {
		t.Errorf("the host queued %d bytes, over the window of %d", peak, windowSize)
	}
}

// chanFrame is a frame as a hand-written peer reads it.
type chanFrame struct {
	t    wire.Type
	id   uint32
	data []byte
}

// readFrames sends every channel frame read from r to the returned channel.
func readFrames(r io.Reader) <-chan chanFrame {
	ch := make(chan chanFrame, 1024)
	go func() {
		defer close(ch)
		for {
			t, p, err := wire.ReadFrame(r)
			if err != nil {
				return
			}
			if t == Hello {
				continue
			}
			id, data, err := splitChan(p)
			if err != nil {
				return
			}
			ch <- chanFrame{t, id, data}
		}
	}()
	return ch
}

func next(t *testing.T, frames <-chan chanFrame, want wire.Type) chanFrame {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatalf("stream ended waiting for a frame of type %d", want)
			}
			if f.t == want {
				return f
			}
		case <-timeout:
			t.Fatalf("no frame of type %d", want)
		}
	}
}

// A guest that ignores the window has its channel ended with
// ErrFlowControl and told to close, instead of the host buffering what it
// sends; the link itself lives on.
func TestGuestBeyondWindow(t *testing.T) {
	host, guestEnd := net.Pipe()
	t.Cleanup(func() { host.Close(); guestEnd.Close() })
	// A hand-written agent: it answers the hello, then ignores the window.
	hello := make(chan struct{})
	var frames <-chan chanFrame
	go func() {
		_, p, err := wire.ReadFrame(guestEnd)
		if err != nil {
			return
		}
		frames = readFrames(guestEnd)
		close(hello)
		_ = wire.NewWriter(guestEnd).WriteFrame(Hello, p)
	}()
	c := connect(t, host)
	<-hello

	out := &gatedWriter{open: make(chan struct{})}
	res := make(chan execResult, 1)
	go func() {
		code, err := c.Exec(ctx(t), Process{Args: []string{"flood"}}, driver.IO{Stdout: out})
		res <- execResult{code, err}
	}()
	open := next(t, frames, Open)
	w := wire.NewWriter(guestEnd)
	chunk := make([]byte, 64<<10)
	for range 2 * windowSize / len(chunk) {
		if err := w.WriteFrame(wire.Stdout, putChan(open.id, chunk)); err != nil {
			t.Fatal(err)
		}
	}
	if f := next(t, frames, Close); f.id != open.id {
		t.Errorf("close of channel %d, want %d", f.id, open.id)
	}
	close(out.open)
	r := <-res
	if !errors.Is(r.err, ErrFlowControl) {
		t.Errorf("exec = %d, %v; want ErrFlowControl", r.code, r.err)
	}
	if peak := c.peakQueued.Load(); peak > windowSize {
		t.Errorf("the host queued %d bytes, over the window of %d", peak, windowSize)
	}
	select {
	case <-c.Done():
		t.Error("the link ended with the channel")
	default:
	}
}

// A host that ignores the window for stdin has its session ended with an
// Error, and the agent serves on.
func TestHostBeyondWindow(t *testing.T) {
	ta := startAgent(t)
	frames := readFrames(ta.host)
	w := wire.NewWriter(ta.host)
	if err := w.WriteFrame(Hello, helloPayload(newNonce())); err != nil {
		t.Fatal(err)
	}
	// sleep never reads its stdin: once the pipe is full, the agent's
	// inbox holds what comes.
	if err := w.WriteFrame(Open, putChan(1, []byte(`{"op":"exec","process":{"args":["sleep","1000"]}}`))); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	// The pipe takes 64 KiB, the window the rest; then the violation.
	for range 2*windowSize/len(chunk) + 2 {
		if err := w.WriteFrame(wire.Stdin, putChan(1, chunk)); err != nil {
			t.Fatal(err)
		}
	}
	f := next(t, frames, wire.Error)
	if f.id != 1 || !strings.Contains(string(f.data), ErrFlowControl.Error()) {
		t.Errorf("error on channel %d: %q; want channel 1 and %q", f.id, f.data, ErrFlowControl)
	}
	if err := w.WriteFrame(Open, putChan(2, []byte(`{"op":"ping"}`))); err != nil {
		t.Fatal(err)
	}
	if f := next(t, frames, wire.Exit); f.id != 2 {
		t.Errorf("exit of channel %d, want the ping's 2", f.id)
	}
}

// Control frames are not covered by the window, so the inbox bounds them
// itself: a peer repeating them costs one queued frame, not one per frame.
func TestInboxBoundsControlFrames(t *testing.T) {
	in := newInbox(nil)
	for range 1000 {
		_ = in.put(frame{wire.Resize, wire.EncodeResize(1, 2)})
		_ = in.put(frame{wire.CloseStdin, nil})
	}
	if len(in.q) != 3 { // Resize, CloseStdin, Resize
		t.Errorf("1000 resizes and closes queued %d frames, want 3", len(in.q))
	}
	out := newInbox(nil)
	_ = out.put(frame{wire.Exit, wire.EncodeExit(0)})
	big := make([]byte, wire.MaxPayload-4)
	for range 1000 {
		_ = out.put(frame{wire.Error, big})
		_ = out.put(frame{wire.Stdout, []byte("x")})
	}
	if len(out.q) != 1 {
		t.Errorf("frames after an exit queued %d frames, want 1", len(out.q))
	}
	f, err := out.get(context.Background())
	if err != nil || f.t != wire.Exit {
		t.Errorf("get = %v, %v; want the exit", f.t, err)
	}
}
