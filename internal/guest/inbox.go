package guest

import (
	"context"
	"sync"

	"github.com/hypercore-dev/hypercore/internal/wire"
)

// frame is one frame of a channel, its channel number stripped.
type frame struct {
	t wire.Type
	p []byte
}

// inbox queues the frames of one channel between the link's reader and the
// session that consumes them. It never blocks the reader: one slow session
// must not stall every other session of the stream. The queue is bounded
// only by what the peer sends, which for the host is a guest it trusts to
// run the workload and for the guest is its own host.
type inbox struct {
	mu     sync.Mutex
	q      []frame
	err    error // set once: no more frames after the queued ones
	notify chan struct{}
}

func newInbox() *inbox { return &inbox{notify: make(chan struct{}, 1)} }

func (b *inbox) put(f frame) {
	b.mu.Lock()
	if b.err == nil {
		b.q = append(b.q, f)
	}
	b.mu.Unlock()
	b.wake()
}

// close ends the inbox with err (io.EOF for a normal end); queued frames
// are still delivered first.
func (b *inbox) close(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.mu.Unlock()
	b.wake()
}

func (b *inbox) wake() {
	select {
	case b.notify <- struct{}{}:
	default:
	}
}

// get returns the next frame, or the inbox's error once it is drained.
func (b *inbox) get(ctx context.Context) (frame, error) {
	for {
		b.mu.Lock()
		if len(b.q) > 0 {
			f := b.q[0]
			b.q[0] = frame{}
			b.q = b.q[1:]
			b.mu.Unlock()
			return f, nil
		}
		err := b.err
		b.mu.Unlock()
		if err != nil {
			return frame{}, err
		}
		select {
		case <-ctx.Done():
			return frame{}, ctx.Err()
		case <-b.notify:
		}
	}
}
