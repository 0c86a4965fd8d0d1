package logfile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPoll is how often a following Reader looks for new output.
const DefaultPoll = 200 * time.Millisecond

// Options selects where a Reader starts and whether it waits for more.
type Options struct {
	// Tail, when above zero, starts this many lines before the end. Zero
	// starts at the oldest rotated generation.
	Tail int
	// SkipExisting starts at the current end, so only new output is read.
	// It overrides Tail.
	SkipExisting bool
	// Follow keeps reading as the file grows, across rotations, until Close,
	// Drain, or the file is removed.
	Follow bool
	// Poll is how often a following Reader checks for new output;
	// DefaultPoll when zero.
	Poll time.Duration
}

// Reader streams a log file and its rotated generations as one stream.
// Read and Close may be called from different goroutines; a Read blocked
// waiting for output returns io.EOF once Close is called.
type Reader struct {
	path string
	opts Options

	mu       sync.Mutex // guards everything below and the files' offsets
	queue    []*segment // rotated content still to read, before live
	live     *os.File
	off      int64  // next offset to read in live
	gen1     uint64 // inode of path.1 when we last looked: a change means a rotation
	closed   bool
	draining bool

	done      chan struct{}
	closeOnce sync.Once
	wake      chan struct{}
}

// segment is a rotated file read from off to its end.
type segment struct {
	f   *os.File
	off int64
}

// Open starts reading the log file at path, which must exist.
func Open(path string, opts Options) (*Reader, error) {
	if opts.Poll <= 0 {
		opts.Poll = DefaultPoll
	}
	live, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	r := &Reader{path: path, opts: opts, live: live, done: make(chan struct{}), wake: make(chan struct{}, 1)}
	// Hold the shared lock so that no rotation shifts files while we pick
	// the starting point.
	if err := flock(live, unix.LOCK_SH); err != nil {
		live.Close()
		return nil, fmt.Errorf("open log %s: lock: %w", path, err)
	}
	defer unlock(live)
	r.gen1 = inode(rotated(path, 1))
	if err := r.seekStart(); err != nil {
		r.closeFiles()
		return nil, err
	}
	return r, nil
}

// OpenContext is Open for a Reader handed to a client that may go away
// without closing it, as a caller of a driver's Logs does: a following
// Reader is closed when ctx ends, so its Read returns io.EOF instead of
// waiting for output no one will read. A Reader that does not follow ends
// on its own at the end of the file and is left to the caller.
func OpenContext(ctx context.Context, path string, opts Options) (*Reader, error) {
	r, err := Open(path, opts)
	if err != nil {
		return nil, err
	}
	if opts.Follow {
		go func() {
			select {
			case <-ctx.Done():
				r.Close()
			case <-r.done:
			}
		}()
	}
	return r, nil
}

// seekStart opens the rotated generations the reader needs and sets where
// reading begins.
func (r *Reader) seekStart() error {
	fi, err := r.live.Stat()
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	if r.opts.SkipExisting {
		r.off = fi.Size()
		return nil
	}
	// files runs oldest first and ends with the live file.
	files := []*os.File{}
	for n := maxGenerations; n >= 1; n-- {
		f, err := os.Open(rotated(r.path, n))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			closeAll(files)
			return fmt.Errorf("open log: %w", err)
		}
		files = append(files, f)
	}
	sizes := make([]int64, 0, len(files)+1)
	for _, f := range files {
		st, err := f.Stat()
		if err != nil {
			closeAll(files)
			return fmt.Errorf("open log: %w", err)
		}
		sizes = append(sizes, st.Size())
	}
	sizes = append(sizes, fi.Size())
	all := append(files, r.live)

	idx, off := 0, int64(0)
	if r.opts.Tail > 0 {
		if idx, off, err = tailStart(all, sizes, r.opts.Tail); err != nil {
			closeAll(files)
			return fmt.Errorf("open log: find last %d lines: %w", r.opts.Tail, err)
		}
	}
	closeAll(files[:min(idx, len(files))])
	for i := idx; i < len(files); i++ {
		r.queue = append(r.queue, &segment{f: files[i]})
	}
	if idx < len(files) {
		r.queue[0].off = off
	} else {
		r.off = off
	}
	return nil
}

// Read reads the next output. It returns io.EOF at the end of the stream:
// right away when not following, else after Close, Drain, or removal of
// the file.
func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, again, err := r.readOnce(p)
		if n > 0 || err != nil {
			return n, err
		}
		if again {
			continue
		}
		select {
		case <-r.done:
			return 0, io.EOF
		case <-r.wake:
		case <-time.After(r.opts.Poll):
		}
	}
}

// readOnce reads what is there now. again says state changed and reading
// should be retried at once; n == 0 with no error and no again means wait.
func (r *Reader) readOnce(p []byte) (n int, again bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, false, io.EOF
	}
	if len(r.queue) > 0 {
		s := r.queue[0]
		n, err := s.f.ReadAt(p, s.off)
		s.off += int64(n)
		if n > 0 {
			return n, false, nil
		}
		if err != nil && err != io.EOF {
			return 0, false, fmt.Errorf("read log: %w", err)
		}
		s.f.Close()
		r.queue = r.queue[1:]
		return 0, true, nil
	}

	// Read the live file under the shared lock, so a rotation is either
	// not started or complete, and noticed before we read at an offset
	// that belonged to the content it moved away.
	live := r.live
	if err := flock(live, unix.LOCK_SH); err != nil {
		return 0, false, fmt.Errorf("read log %s: lock: %w", r.path, err)
	}
	defer unlock(live)
	if r.catchUpRotation() {
		return 0, true, nil
	}
	n, err = live.ReadAt(p, r.off)
	r.off += int64(n)
	if n > 0 {
		return n, false, nil
	}
	if err != nil && err != io.EOF {
		return 0, false, fmt.Errorf("read log: %w", err)
	}
	moved, gone, err := r.checkLive()
	if err != nil {
		return 0, false, err
	}
	if moved {
		return 0, true, nil
	}
	if gone || !r.opts.Follow || r.draining {
		return 0, false, io.EOF
	}
	return 0, false, nil
}

// catchUpRotation notices that Rotate copied the live file into a new
// path.1 and truncated it. What we had not read yet is in path.1 past our
// offset, so that is queued and the live file is read again from its start.
func (r *Reader) catchUpRotation() bool {
	g := inode(rotated(r.path, 1))
	if g == 0 || g == r.gen1 {
		return false
	}
	r.gen1 = g
	if f, err := os.Open(rotated(r.path, 1)); err == nil {
		r.queue = append(r.queue, &segment{f: f, off: r.off})
	}
	r.off = 0
	return true
}

// checkLive runs at the end of the live file and notices truncation by
// others, replacement and removal. moved says reading should resume
// somewhere new; gone says the log file no longer exists.
func (r *Reader) checkLive() (moved, gone bool, err error) {
	fi, err := r.live.Stat()
	if err != nil {
		return false, false, fmt.Errorf("read log: %w", err)
	}
	if fi.Size() < r.off {
		r.off = 0
		return true, false, nil
	}
	cur, err := os.Stat(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, true, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("read log: %w", err)
	}
	if !os.SameFile(fi, cur) {
		// Replaced by a new file: we have read all of the old one.
		f, err := os.Open(r.path)
		if err != nil {
			return false, true, nil
		}
		r.live.Close()
		r.live, r.off = f, 0
		r.gen1 = inode(rotated(r.path, 1))
		return true, false, nil
	}
	return false, false, nil
}

// Drain makes a following Reader stop at the end of the output written so
// far, instead of waiting for more.
func (r *Reader) Drain() {
	r.mu.Lock()
	r.draining = true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Done is closed when Close is called.
func (r *Reader) Done() <-chan struct{} { return r.done }

// Close ends the stream; a Read waiting for output returns io.EOF.
func (r *Reader) Close() error {
	r.closeOnce.Do(func() {
		close(r.done)
		r.mu.Lock()
		defer r.mu.Unlock()
		r.closed = true
		r.closeFiles()
	})
	return nil
}

func (r *Reader) closeFiles() {
	for _, s := range r.queue {
		s.f.Close()
	}
	r.queue = nil
	r.live.Close()
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
