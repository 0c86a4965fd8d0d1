// Package logfile keeps a workload's output in a plain append-only file that
// the workload itself writes to, so no process of hypercore has to stay alive
// to carry its logs. It reads such a file (whole, tail -n, follow) and rotates
// it by copy-and-truncate, because the writer holds the file open and would
// not notice a rename.
//
// Rotated generations are named path.1 (newest) to path.N (oldest). Readers
// see them as one stream, oldest first.
package logfile

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// OpenWriter opens (creating if needed) the log file at path for appending.
// Writers must use O_APPEND: after Rotate truncates the file, their next write
// lands at the new end instead of leaving a hole of zeros up to the old size.
func OpenWriter(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log file for appending: %w", err)
	}
	return f, nil
}

// rotated returns the name of the n-th rotated generation of path.
func rotated(path string, n int) string { return fmt.Sprintf("%s.%d", path, n) }

// maxGenerations bounds how many rotated files a reader looks for, so a
// directory full of stray path.N files cannot make Open slow.
const maxGenerations = 100

// flock takes a whole-file advisory lock. Rotate holds it exclusively while it
// copies, renames and truncates; readers hold it shared while they look at
// the files, so they never see a rotation half done.
func flock(f *os.File, how int) error {
	for {
		err := unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			return err
		}
	}
}

func unlock(f *os.File) { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN) }

// inode returns the inode number of the file at path, or 0 if there is none.
func inode(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}
