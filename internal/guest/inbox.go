package guest

import (
	"context"
	"fmt"
	"sync"

	"github.com/hypercore-dev/hypercore/internal/wire"
)

// frame is one frame of a channel, its channel number stripped.
type frame struct {
	t wire.Type
	p []byte
}

// inbox queues the frames of one channel between the link's reader and the
// session that consumes them. put never blocks the reader: one slow session
// must not stall every other session of the stream. What it queues is
// bounded all the same, since for the host the peer is an untrusted guest:
// data frames only within the window this end granted, which it grants
// again as get hands data out; of control frames, a Resize replaces one
// queued just before it, a second CloseStdin is dropped, and nothing is
// kept after an Exit or Error. The caller passes put only the frame types
// its end expects.
type inbox struct {
	mu     sync.Mutex
	q      []frame
	err    error // set once: no more frames after the queued ones
	notify chan struct{}

	credit    int64 // window cost the peer may still send
	queued    int64 // window cost of the data frames in q
	ungranted int64 // window cost handed out by get and not yet granted back
	eof       bool  // CloseStdin came: no more input
	final     bool  // Exit or Error came: the channel's last frame
	// grant sends the peer a Window frame; it is called without mu held,
	// from the consumer's goroutine, never the reader's.
	grant func(n uint32)
}

func newInbox(grant func(n uint32)) *inbox {
	return &inbox{notify: make(chan struct{}, 1), credit: windowSize, grant: grant}
}

// put queues f. A data frame beyond the window ends the inbox with an
// ErrFlowControl, which put returns so the caller can end the channel.
func (b *inbox) put(f frame) error {
	b.mu.Lock()
	defer b.wake()
	defer b.mu.Unlock()
	if b.err != nil || b.final {
		return nil
	}
	switch {
	case isData(f.t):
		if len(f.p) == 0 || f.t == wire.Stdin && b.eof {
			return nil
		}
		c := cost(len(f.p))
		if c > b.credit {
			b.err = fmt.Errorf("%w: a frame of %d bytes of data when %d were left", ErrFlowControl, len(f.p), max(b.credit-dataFrameCost, 0))
			// The session learns of it now, not after a backlog it can
			// no longer trust.
			b.q, b.queued = nil, 0
			return b.err
		}
		b.credit -= c
		b.queued += c
	case f.t == wire.Resize:
		if n := len(b.q); n > 0 && b.q[n-1].t == wire.Resize {
			b.q[n-1] = f
			return nil
		}
	case f.t == wire.CloseStdin:
		if b.eof {
			return nil
		}
		b.eof = true
	case f.t == wire.Exit || f.t == wire.Error:
		b.final = true
	}
	if !isData(f.t) && len(f.p) > maxControlPayload {
		f.p = append([]byte(nil), f.p[:maxControlPayload]...)
	}
	b.q = append(b.q, f)
	return nil
}

// queuedBytes is the window cost of the data frames waiting in the inbox.
func (b *inbox) queuedBytes() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.queued
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
// Taking data out lets the peer send more: once half the window is taken,
// it is granted back in one Window frame rather than one per frame.
func (b *inbox) get(ctx context.Context) (frame, error) {
	for {
		b.mu.Lock()
		if len(b.q) > 0 {
			f := b.q[0]
			b.q[0] = frame{}
			b.q = b.q[1:]
			var grant int64
			if isData(f.t) {
				c := cost(len(f.p))
				b.queued -= c
				b.ungranted += c
				if b.ungranted >= windowSize/2 && b.err == nil {
					grant, b.ungranted = b.ungranted, 0
					b.credit += grant
				}
			}
			b.mu.Unlock()
			if grant > 0 && b.grant != nil {
				b.grant(uint32(grant))
			}
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
