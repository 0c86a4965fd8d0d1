package cri

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// logPollEvery is how often a followed log is checked for new lines, and
// the workload for whether it still exists.
const logPollEvery = 200 * time.Millisecond

// logFile is where the endpoint writes id's container log, when the
// driver keeps logs (a local endpoint: the file is on this host).
func (d *Driver) logFile(id spec.ID) string {
	return filepath.Join(d.logDir, id.String(), containerName+".log")
}

// Logs streams the container's output from the log file the endpoint
// writes in the CRI format ("<time> <stream> <P|F> <text>"), decoded back
// to the text. Only a local endpoint's file can be read.
func (d *Driver) Logs(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error) {
	if d.logDir == "" {
		return nil, fmt.Errorf("cri: logs of %s on %s: %w: the log file is on the endpoint's machine (read it there: crictl logs)", id, d.endpoint, ErrUnsupported)
	}
	if _, err := d.container(ctx, id); err != nil {
		return nil, err
	}
	f, err := os.Open(d.logFile(id))
	if errors.Is(err, os.ErrNotExist) {
		// Created, not started yet: nothing written so far.
		if !opts.Follow {
			return io.NopCloser(strings.NewReader("")), nil
		}
	} else if err != nil {
		return nil, fmt.Errorf("cri: logs of %s: %w", id, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		defer cancel()
		pw.CloseWithError(d.copyLog(ctx, id, f, pw, opts))
	}()
	return &logReader{PipeReader: pr, cancel: cancel}, nil
}

// logReader ends the copying goroutine when the caller closes it.
type logReader struct {
	*io.PipeReader
	cancel context.CancelFunc
}

// Close stops the stream.
func (r *logReader) Close() error {
	r.cancel()
	return r.PipeReader.Close()
}

// copyLog writes f's decoded lines to w: the last opts.Tail of them (all
// when 0), then, when following, new ones as they come until ctx ends or
// the workload is gone. A nil f is a file not created yet.
func (d *Driver) copyLog(ctx context.Context, id spec.ID, f *os.File, w io.Writer, opts driver.LogOptions) error {
	if f != nil {
		defer f.Close()
	}
	var br *bufio.Reader
	var partial string
	var tail []string
	readLines := func(emit func(string) error) error {
		for {
			line, err := br.ReadString('\n')
			if err == io.EOF {
				partial += line
				return nil
			}
			if err != nil {
				return err
			}
			if err := emit(decodeLogLine(partial + line)); err != nil {
				return err
			}
			partial = ""
		}
	}
	write := func(s string) error { _, err := io.WriteString(w, s); return err }
	if f != nil {
		br = bufio.NewReader(f)
		if opts.Tail > 0 {
			if err := readLines(func(s string) error {
				if tail = append(tail, s); len(tail) > opts.Tail {
					tail = tail[1:]
				}
				return nil
			}); err != nil {
				return err
			}
			if err := write(strings.Join(tail, "")); err != nil {
				return err
			}
		} else if err := readLines(write); err != nil {
			return err
		}
	}
	if !opts.Follow {
		return nil
	}
	t := time.NewTicker(logPollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if f == nil {
			var err error
			if f, err = os.Open(d.logFile(id)); err == nil {
				defer f.Close()
				br = bufio.NewReader(f)
			}
		}
		if br != nil {
			if err := readLines(write); err != nil {
				return err
			}
		}
		if _, err := d.container(ctx, id); errors.Is(err, driver.ErrNotFound) {
			return nil
		}
	}
}

// decodeLogLine turns one CRI log line back into the text it carries: a
// full line ("F") ends with a newline, a partial one ("P") does not.
func decodeLogLine(line string) string {
	line = strings.TrimSuffix(line, "\n")
	parts := strings.SplitN(line, " ", 4)
	if len(parts) < 3 {
		return line + "\n"
	}
	text := ""
	if len(parts) == 4 {
		text = parts[3]
	}
	if parts[2] == "P" {
		return text
	}
	return text + "\n"
}
