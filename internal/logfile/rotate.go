package logfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Rotate moves the content of the log file at path into path.1 (shifting
// older generations up to path.keep and dropping the oldest) and truncates
// path, once path has reached maxBytes. It does nothing below that size or
// when path does not exist. With keep <= 0 the file is only truncated.
//
// The writer keeps its file open throughout, which is why this copies and
// truncates rather than renames. Output written in the instant between the
// last copy and the truncation is lost; Rotate copies twice to keep that
// window as short as it can.
func Rotate(path string, maxBytes int64, keep int) error {
	live, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rotate log: %w", err)
	}
	defer live.Close()
	if err := flock(live, unix.LOCK_EX); err != nil {
		return fmt.Errorf("rotate log %s: lock: %w", path, err)
	}
	defer unlock(live)

	// Check the size only under the lock: a concurrent Rotate may just have
	// emptied the file.
	fi, err := live.Stat()
	if err != nil {
		return fmt.Errorf("rotate log: %w", err)
	}
	if fi.Size() < maxBytes || fi.Size() == 0 {
		return nil
	}
	if keep <= 0 {
		return truncate(path)
	}

	tmp := path + ".rotating"
	if err := copyOut(live, tmp); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	for i := keep; i >= 2; i-- {
		if err := os.Rename(rotated(path, i-1), rotated(path, i)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			_ = os.Remove(tmp)
			return fmt.Errorf("rotate log: shift generation %d: %w", i-1, err)
		}
	}
	if err := os.Rename(tmp, rotated(path, 1)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("rotate log: %w", err)
	}
	return truncate(path)
}

// copyOut copies everything readable from live into a new file at dst. It
// reads a second time after the first pass, to catch what the writer added
// while the first copy ran.
func copyOut(live *os.File, dst string) error {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("rotate log: %w", err)
	}
	for range 2 {
		if _, err := io.Copy(out, live); err != nil {
			out.Close()
			return fmt.Errorf("rotate log: copy to %s: %w", dst, err)
		}
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("rotate log: %w", err)
	}
	return nil
}

func truncate(path string) error {
	if err := os.Truncate(path, 0); err != nil {
		return fmt.Errorf("rotate log: truncate: %w", err)
	}
	return nil
}
