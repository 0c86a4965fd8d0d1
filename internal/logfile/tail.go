package logfile

import "os"

// tailChunk is how much tailStart reads at a time, walking backwards.
const tailChunk = 32 << 10

// tailStart finds where the last n lines of the concatenation of files
// (oldest first, each of the given size) begin: the index of the file and
// the offset in it. A newline at the very end does not start an empty line,
// as with tail -n.
func tailStart(files []*os.File, sizes []int64, n int) (int, int64, error) {
	buf := make([]byte, tailChunk)
	newlines := 0
	last := true // the next byte examined is the last of the stream
	for i := len(files) - 1; i >= 0; i-- {
		end := sizes[i]
		for end > 0 {
			start := max(end-tailChunk, 0)
			chunk := buf[:end-start]
			if _, err := files[i].ReadAt(chunk, start); err != nil {
				return 0, 0, err
			}
			for j := len(chunk) - 1; j >= 0; j-- {
				if chunk[j] != '\n' {
					last = false
					continue
				}
				if last {
					last = false
					continue
				}
				newlines++
				if newlines == n {
					return i, start + int64(j) + 1, nil
				}
			}
			end = start
		}
	}
	return 0, 0, nil
}
