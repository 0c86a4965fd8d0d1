package logfile

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// waitLimit only bounds how long a broken test hangs; nothing asserts on time.
const waitLimit = 10 * time.Second

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
}

func appendTo(t *testing.T, w *os.File, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if _, err := w.WriteString(l + "\n"); err != nil {
			t.Fatal(err)
		}
	}
}

func readAll(t *testing.T, path string, opts Options) string {
	t.Helper()
	r, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestTail(t *testing.T) {
	dir := t.TempDir()
	big := strings.Repeat(strings.Repeat("x", 99)+"\n", 1000) // spans several tail chunks
	cases := []struct {
		name    string
		rotated []string // path.N ... path.1
		live    string
		tail    int
		want    string
	}{
		{"all", nil, "a\nb\nc\n", 0, "a\nb\nc\n"},
		{"last two", nil, "a\nb\nc\n", 2, "b\nc\n"},
		{"no final newline", nil, "a\nb\nc", 2, "b\nc"},
		{"more than there is", nil, "a\nb\n", 10, "a\nb\n"},
		{"empty", nil, "", 3, ""},
		{"across rotation", []string{"1\n2\n"}, "3\n", 2, "2\n3\n"},
		{"history oldest first", []string{"1\n", "2\n"}, "3\n", 0, "1\n2\n3\n"},
		{"start in oldest", []string{"1\n2\n", "3\n"}, "4\n", 3, "2\n3\n4\n"},
		{"live empty after rotation", []string{"1\n2\n"}, "", 1, "2\n"},
		{"big", nil, big + "end\n", 3, strings.Repeat("x", 99) + "\n" + strings.Repeat("x", 99) + "\nend\n"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("log%d", i))
			for j, content := range c.rotated {
				writeFile(t, rotated(path, len(c.rotated)-j), content)
			}
			writeFile(t, path, c.live)
			if got := readAll(t, path, Options{Tail: c.tail}); got != c.want {
				t.Errorf("tail %d = %q, want %q", c.tail, got, c.want)
			}
		})
	}
}

func TestRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()

	appendTo(t, w, "one")
	if err := Rotate(path, 100, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rotated(path, 1)); !os.IsNotExist(err) {
		t.Fatalf("rotated below the threshold: stat path.1 = %v", err)
	}

	for _, gen := range []string{"one", "two", "three"} {
		if gen != "one" {
			appendTo(t, w, gen)
		}
		if err := Rotate(path, 1, 2); err != nil {
			t.Fatal(err)
		}
	}
	// The writer keeps its file and, thanks to O_APPEND, writes at the start
	// of the emptied file.
	appendTo(t, w, "four")
	for name, want := range map[string]string{
		path:               "four\n",
		rotated(path, 1):   "three\n",
		rotated(path, 2):   "two\n",
		path + ".rotating": "",
	} {
		got, err := os.ReadFile(name)
		if want == "" {
			if !os.IsNotExist(err) {
				t.Errorf("%s exists: %q", filepath.Base(name), got)
			}
			continue
		}
		if err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", filepath.Base(name), got, err, want)
		}
	}
	if _, err := os.Stat(rotated(path, 3)); !os.IsNotExist(err) {
		t.Errorf("kept more than 2 generations: %v", err)
	}
	if got := readAll(t, path, Options{}); got != "two\nthree\nfour\n" {
		t.Errorf("whole history = %q", got)
	}
	if err := Rotate(filepath.Join(t.TempDir(), "missing"), 1, 2); err != nil {
		t.Errorf("rotating a missing file: %v", err)
	}
}

func TestRotateKeepZeroTruncates(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	writeFile(t, path, "old\n")
	if err := Rotate(path, 1, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); len(got) != 0 {
		t.Errorf("file not truncated: %q", got)
	}
	if _, err := os.Stat(rotated(path, 1)); !os.IsNotExist(err) {
		t.Errorf("keep 0 left path.1: %v", err)
	}
}

// lineReader delivers the lines of r on a channel, so tests can wait for a
// line with a bound instead of hanging.
func lineReader(r io.Reader) <-chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		s := bufio.NewScanner(r)
		for s.Scan() {
			ch <- s.Text()
		}
	}()
	return ch
}

func expectLines(t *testing.T, ch <-chan string, want ...string) {
	t.Helper()
	for _, w := range want {
		select {
		case got, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended, want %q", w)
			}
			if got != w {
				t.Fatalf("got line %q, want %q", got, w)
			}
		case <-time.After(waitLimit):
			t.Fatalf("no line within %v, want %q", waitLimit, w)
		}
	}
}

func expectEnd(t *testing.T, ch <-chan string) {
	t.Helper()
	select {
	case got, ok := <-ch:
		if ok {
			t.Fatalf("got line %q, want end of stream", got)
		}
	case <-time.After(waitLimit):
		t.Fatalf("stream did not end within %v", waitLimit)
	}
}

func numbered(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("line %d", i))
	}
	return out
}

func TestFollowSurvivesRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	appendTo(t, w, numbered(1, 10)...)

	// The reader only looks again when poked, so the test decides what
	// happens between two looks.
	r, err := Open(path, Options{Tail: 2, Follow: true, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	poke := func() { r.wake <- struct{}{} }
	lines := lineReader(r)
	expectLines(t, lines, numbered(9, 10)...)

	// Lines 11-15 are written but not yet read when the rotation moves them
	// into path.1, and the new file has grown past the old read offset; the
	// reader must still deliver every line once, in order.
	appendTo(t, w, numbered(11, 15)...)
	if err := Rotate(path, 1, 3); err != nil {
		t.Fatal(err)
	}
	appendTo(t, w, numbered(100, 120)...)
	poke()
	expectLines(t, lines, append(numbered(11, 15), numbered(100, 120)...)...)

	// A rotation after everything was read.
	if err := Rotate(path, 1, 3); err != nil {
		t.Fatal(err)
	}
	appendTo(t, w, numbered(21, 22)...)
	poke()
	expectLines(t, lines, numbered(21, 22)...)

	// Someone else truncating the file.
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendTo(t, w, "x")
	poke()
	expectLines(t, lines, "x")

	r.Close()
	expectEnd(t, lines)
}

func TestFollowEndsWhenRemoved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	writeFile(t, path, "a\n")
	r, err := Open(path, Options{Follow: true, Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lines := lineReader(r)
	expectLines(t, lines, "a")
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	expectEnd(t, lines)
}

func TestSkipExistingAndDrain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	w, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	appendTo(t, w, "old")
	if err := Rotate(path, 1, 1); err != nil {
		t.Fatal(err)
	}
	appendTo(t, w, "older")

	r, err := Open(path, Options{SkipExisting: true, Follow: true, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	appendTo(t, w, "new")
	// Drain wakes the reader despite the long poll and ends the stream
	// after what is there.
	r.Drain()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != "new\n" {
		t.Errorf("read %q, want only the new line", b)
	}
}

func TestCloseUnblocksRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	writeFile(t, path, "")
	r, err := Open(path, Options{Follow: true, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	lines := lineReader(r)
	r.Close()
	expectEnd(t, lines)
	select {
	case <-r.Done():
	default:
		t.Error("Done not closed after Close")
	}
}

// TestOpenContext checks that a following stream ends with its context, so
// a client that goes away leaves no Read waiting, and that a stream that
// does not follow is read to its end whatever its context.
func TestOpenContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	writeFile(t, path, "a\n")
	ctx, cancel := context.WithCancel(context.Background())
	r, err := OpenContext(ctx, path, Options{Follow: true, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lines := lineReader(r)
	expectLines(t, lines, "a")
	cancel()
	expectEnd(t, lines)

	whole, err := OpenContext(ctx, path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer whole.Close()
	if b, err := io.ReadAll(whole); err != nil || string(b) != "a\n" {
		t.Errorf("read %q, %v with an ended context and no follow, want the whole file", b, err)
	}
	if _, err := OpenContext(ctx, filepath.Join(t.TempDir(), "missing"), Options{Follow: true}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenContext of a missing file: %v, want ErrNotExist", err)
	}
}
