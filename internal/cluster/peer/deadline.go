package peer

import (
	"sync"
	"time"
)

// deadline is a settable point in time whose passing closes a channel, so
// a blocked read can select on it (as net.Pipe's ends do). Setting a
// deadline in the past ends what waits at once; setting a new one later
// lets the next call wait again. The proxy moves a connection's deadline
// before every read, so moving it reuses one timer.
type deadline struct {
	mu     sync.Mutex
	when   time.Time // zero: none
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes
}

func newDeadline() deadline { return deadline{cancel: make(chan struct{})} }

// set moves the deadline to t; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.when = t
	if t.IsZero() {
		if d.timer != nil {
			d.timer.Stop()
		}
		if isClosed(d.cancel) {
			d.cancel = make(chan struct{})
		}
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		if d.timer != nil {
			d.timer.Stop()
		}
		if !isClosed(d.cancel) {
			close(d.cancel)
		}
		return
	}
	if isClosed(d.cancel) {
		d.cancel = make(chan struct{})
	}
	if d.timer == nil {
		d.timer = time.AfterFunc(dur, d.fire)
	} else {
		d.timer.Reset(dur)
	}
}

// fire closes the channel if the deadline has passed; a timer set for an
// earlier deadline, since moved, does nothing.
func (d *deadline) fire() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.when.IsZero() && !time.Now().Before(d.when) && !isClosed(d.cancel) {
		close(d.cancel)
	}
}

// wait returns a channel closed once the deadline has passed.
func (d *deadline) wait() chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
