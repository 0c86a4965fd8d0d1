package diskimage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// spareTimeout bounds a background mkfs.
const spareTimeout = time.Minute

// Spare keeps one formatted image of one size ready in a directory, so
// that the caller who needs an image of that size gets it by a rename and
// mkfs runs off its path, in the background, for the next one. An image of
// another size is made on the spot.
type Spare struct {
	dir     string
	sizeMiB int64
	mu      sync.Mutex
	making  bool
	wg      sync.WaitGroup
}

// NewSpare keeps a spare image of sizeMiB in dir, which must be on the
// filesystem the images are taken to (Take renames). The first spare is
// made in the background now; one left by an earlier process is used.
func NewSpare(dir string, sizeMiB int64) (*Spare, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spare disk images: %w", err)
	}
	s := &Spare{dir: dir, sizeMiB: sizeMiB}
	// Spares of another size, from a run with another default, are of no
	// more use.
	if entries, err := os.ReadDir(dir); err == nil {
		for _, e := range entries {
			if filepath.Join(dir, e.Name()) != s.path() {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
	}
	s.refill()
	return s, nil
}

func (s *Spare) path() string {
	return filepath.Join(s.dir, "spare-"+strconv.FormatInt(s.sizeMiB, 10)+"m.ext4")
}

// Take puts a formatted ext4 image of sizeMiB at path: the spare if it is
// that size and ready, else one made now. Then it starts making the next
// spare.
func (s *Spare) Take(ctx context.Context, path string, sizeMiB int64) error {
	if sizeMiB != s.sizeMiB {
		return Create(ctx, path, sizeMiB)
	}
	err := os.Rename(s.path(), path)
	if errors.Is(err, os.ErrNotExist) {
		err = Create(ctx, path, sizeMiB)
	}
	s.refill()
	return err
}

// refill makes a spare in the background unless one is there or being
// made. It is made under a temporary name and renamed, so a spare at
// s.path() is always whole.
func (s *Spare) refill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.making {
		return
	}
	if _, err := os.Stat(s.path()); err == nil {
		return
	}
	s.making = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), spareTimeout)
		defer cancel()
		tmp := s.path() + ".tmp"
		err := Create(ctx, tmp, s.sizeMiB)
		if err == nil {
			err = os.Rename(tmp, s.path())
		}
		if err != nil {
			slog.Warn("cannot make a spare disk image; workloads' disks are made as they start", "err", err)
		}
		s.mu.Lock()
		s.making = false
		s.mu.Unlock()
	}()
}

// Wait waits for a spare being made, so tests and Close leave no mkfs
// running.
func (s *Spare) Wait() { s.wg.Wait() }
