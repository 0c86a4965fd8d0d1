package main

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestDetachReader(t *testing.T) {
	cases := []struct {
		in, want string
		detach   bool
	}{
		{"hello\n", "hello\n", false},
		{"ab\x10\x11cd", "ab", true},
		{"a\x10b\x10\x10\x11", "a\x10b\x10", true},
		{"x\x10", "x\x10", false}, // a lone Ctrl-P at the end still reaches the workload
	}
	for _, c := range cases {
		// One byte per Read, so sequences split across reads are covered.
		d := &detachReader{r: iotest.OneByteReader(strings.NewReader(c.in)), keys: detachKeys}
		got, err := io.ReadAll(d)
		if string(got) != c.want || errors.Is(err, errDetach) != c.detach {
			t.Errorf("%q: got %q, %v; want %q, detach %v", c.in, got, err, c.want, c.detach)
		}
	}
}

func TestProgressBar(t *testing.T) {
	if got := bar(512<<10, 1<<20); got != "[===============               ]  50.0% of 1.0 MiB" {
		t.Fatalf("half: %q", got)
	}
	if got := bar(10, 0); !strings.HasPrefix(got, "[") {
		t.Fatalf("zero total must not divide by zero: %q", got)
	}
	if got := bar(3<<30, 3<<30); !strings.Contains(got, "100.0% of 3.0 GiB") {
		t.Fatalf("full: %q", got)
	}
}
