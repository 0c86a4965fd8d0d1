package guest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/hypercore-dev/hypercore/internal/wire"
)

// Flow control, as SSH channels and HTTP/2 streams do it: each end grants
// the other, per channel, a window of bytes of data it will queue; the
// sender never has more than that unacknowledged, and the receiver grants
// more (a Window frame) only as its consumer takes data out of the inbox.
// So a guest cannot make the host queue more than windowSize per channel by
// writing faster than the host's consumer reads, and one stalled channel
// waits on its own window without holding up the link or other channels.

const (
	// windowSize is the window each end grants for each channel when it
	// opens, in both directions. Both ends are the same binary, so it is a
	// constant of the protocol rather than something negotiated.
	windowSize = 256 << 10
	// dataFrameCost is what each data frame uses of the window beyond its
	// bytes. Without it a peer could send the window as one-byte frames and
	// make the receiver hold a frame header per byte, tens of times the
	// window in memory.
	dataFrameCost = 64
	// maxWindow bounds a sender's credit: a peer that grants more than
	// this has lost count, as HTTP/2 treats a window over 2^31-1.
	maxWindow = 1<<31 - 1
	// maxControlPayload bounds what a queued control frame keeps (an Error
	// message, in practice): only data frames are covered by the window,
	// and a 1 MiB "error" is no message anyone reads.
	maxControlPayload = 4 << 10
)

// ErrFlowControl means the peer sent a channel more data than the window it
// was granted, or granted a window larger than the protocol allows. The
// receiver ends the channel rather than queue the excess.
var ErrFlowControl = errors.New("guest agent protocol violation: data beyond the flow-control window")

// errChannelEnded fails writes to a channel whose session is over, so a
// writer waiting for window does not wait forever.
var errChannelEnded = errors.New("guest agent: channel ended")

// isData says whether frames of type t are data, the only ones the window
// counts.
func isData(t wire.Type) bool {
	return t == wire.Stdin || t == wire.Stdout || t == wire.Stderr
}

// cost is what a data frame of n bytes uses of the window.
func cost(n int) int64 { return int64(n) + dataFrameCost }

func encodeWindow(n uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return b[:]
}

func decodeWindow(p []byte) (uint32, error) {
	if len(p) != 4 {
		return 0, fmt.Errorf("guest agent: window frame of %d bytes, want 4", len(p))
	}
	return binary.BigEndian.Uint32(p), nil
}

// sendWindow is what the peer lets this end still send on one channel.
type sendWindow struct {
	mu      sync.Mutex
	cond    sync.Cond
	avail   int64
	waiting int
	err     error
}

func newSendWindow() *sendWindow {
	w := &sendWindow{avail: windowSize}
	w.cond.L = &w.mu
	return w
}

// take waits until the window has room for a data frame and reserves one
// of up to want bytes, returning its size.
func (w *sendWindow) take(want int) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.err == nil && w.avail <= dataFrameCost {
		w.waiting++
		w.cond.Wait()
		w.waiting--
	}
	if w.err != nil {
		return 0, w.err
	}
	n := min(int64(want), w.avail-dataFrameCost)
	w.avail -= cost(int(n))
	return int(n), nil
}

// grant adds the peer's Window frame of n bytes.
func (w *sendWindow) grant(n uint32) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	if w.avail+int64(n) > maxWindow {
		w.err = fmt.Errorf("%w: peer granted a window of %d bytes", ErrFlowControl, w.avail+int64(n))
	} else {
		w.avail += int64(n)
	}
	w.cond.Broadcast()
}

// close fails every write from now on with err.
func (w *sendWindow) close(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	w.cond.Broadcast()
}

// stalled says whether a writer is waiting for the peer to grant window:
// the output is there, the peer is just slow to take it.
func (w *sendWindow) stalled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.waiting > 0 && w.err == nil
}

// flowWriter turns writes into data frames of type t on channel id, never
// beyond the window win allows: a write blocks until the peer grants more.
type flowWriter struct {
	w   *wire.Writer
	id  uint32
	t   wire.Type
	win *sendWindow
}

func (f flowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k, err := f.win.take(min(len(p), wire.MaxPayload-4))
		if err != nil {
			return n, err
		}
		if err := f.w.WriteFrame(f.t, putChan(f.id, p[:k])); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

var _ io.Writer = flowWriter{}
