package image

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// ErrStoreFull means a pull would take the image store past
// Options.MaxStoreSize.
var ErrStoreFull = errors.New("image store full")

// entryCost is what an entry counts against a budget besides its content:
// about the block and inode it takes on disk, so a layer of millions of
// empty files is bounded too.
const entryCost = 4096

// budget counts the bytes one pull unpacks against two limits: the image's
// own size (every layer, shared or new) and the store's free room (only
// what is written now).
type budget struct {
	image, store limit
	written      int64 // bytes written so far
}

// limit is bytes left under one setting, and the error for going past it.
type limit struct {
	left int64
	err  func() error
}

func (l *limit) take(n int64) error {
	l.left -= n
	if l.left < 0 {
		return l.err()
	}
	return nil
}

// newBudget is a budget of imageMax bytes per image and storeLeft bytes of
// the store's room (0: no store budget), with the settings' names for the
// errors.
func newBudget(imageMax int64, imageFlag string, storeLeft int64, storeErr string) *budget {
	b := &budget{
		image: limit{left: imageMax, err: func() error {
			return fmt.Errorf("%w: it unpacks to more than %d MiB, the most %s allows; raise it if the image is genuine (a small layer that unpacks this big is a compression bomb)",
				ErrTooLarge, imageMax>>20, imageFlag)
		}},
		store: limit{left: math.MaxInt64, err: func() error { return nil }},
	}
	if storeErr != "" {
		b.store = limit{left: storeLeft, err: func() error { return fmt.Errorf("%w: %s", ErrStoreFull, storeErr) }}
	}
	return b
}

// take counts n bytes written now.
func (b *budget) take(n int64) error {
	b.written += n
	if err := b.image.take(n); err != nil {
		return err
	}
	return b.store.take(n)
}

// takeShared counts n bytes of a layer unpacked before: part of the image,
// but no new room in the store.
func (b *budget) takeShared(n int64) error { return b.image.take(n) }

func (s *Store) maxImageSizeFlag() string {
	if s.opts.MaxImageSizeFlag != "" {
		return s.opts.MaxImageSizeFlag
	}
	return "the store's MaxImageSize"
}

// pullBudget is the budget of one pull: MaxImageSize, and what is left of
// MaxStoreSize if there is one.
func (s *Store) pullBudget() (*budget, error) {
	if s.opts.MaxStoreSize <= 0 {
		return newBudget(s.opts.MaxImageSize, s.maxImageSizeFlag(), 0, ""), nil
	}
	used, err := s.Usage()
	if err != nil {
		return nil, err
	}
	flag := s.opts.MaxStoreSizeFlag
	if flag == "" {
		flag = "the store's MaxStoreSize"
	}
	msg := fmt.Sprintf("unpacking this image would take the image store past %d MiB, the most %s allows (%d MiB in use); delete unused images (hypercore image prune) or raise it",
		s.opts.MaxStoreSize>>20, flag, used>>20)
	return newBudget(s.opts.MaxImageSize, s.maxImageSizeFlag(), s.opts.MaxStoreSize-used, msg), nil
}

// Usage is the disk space the store takes, in bytes: blobs, unpacked
// layers (as counted when unpacked) and microVM disks (allocated blocks).
// It reads no tree, so it is cheap enough to call on every pull.
func (s *Store) Usage() (int64, error) {
	var n int64
	for _, dir := range []string{filepath.Join(s.dir, "blobs", "sha256"), filepath.Join(s.dir, "ext4")} {
		entries, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			return 0, fmt.Errorf("image store usage: %w", err)
		}
		for _, e := range entries {
			n += fileUsage(e)
		}
	}
	layers := filepath.Join(s.dir, "layers")
	entries, err := os.ReadDir(layers)
	if err != nil {
		return 0, fmt.Errorf("image store usage: %w", err)
	}
	for _, e := range entries {
		if size, err := layerSize(filepath.Join(layers, e.Name())); err == nil {
			n += size
		}
	}
	return n, nil
}
