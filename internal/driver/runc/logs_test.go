package runc

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

func TestLogs(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	cfg := testConfig(testRootfs(t), "sh", "-c", "echo hello; echo err >&2; sleep 1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	testutil.WaitFor(t, waitLimit, "both lines in the log", func() bool {
		return drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}) == "hello\nerr\n"
	})
	if got := drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{Tail: 1}); got != "err\n" {
		t.Errorf("tail 1 = %q, want the last line", got)
	}

	ctx, cancel := context.WithCancel(testCtx(t))
	r, err := d.Logs(ctx, cfg.ID, driver.LogOptions{Follow: true, Tail: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lines := scanLines(r)
	expectLine(t, lines, "err")
	// Written by another process through the workload's own stdout.
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo later >> /proc/1/fd/1")
	expectLine(t, lines, "later")

	// Rotation under a follower: nothing is lost or repeated.
	d.opts.LogMaxBytes = 1
	if err := d.RotateLogs(); err != nil {
		t.Fatal(err)
	}
	drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "sh", "-c", "echo rotated >> /proc/1/fd/1")
	expectLine(t, lines, "rotated")
	if got := drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}); got != "hello\nerr\nlater\nrotated\n" {
		t.Errorf("history across rotation = %q", got)
	}

	cancel()
	expectEnd(t, lines)
}

// TestAttach writes to the workload's stdin and reads its output, twice, to
// show that detaching does not end the workload's input.
func TestAttach(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	cfg := testConfig(testRootfs(t), "sh", "-c", `while read line; do echo "got $line"; done; echo "stdin closed"`)
	drivertest.Run(t, testCtx(t), d, cfg)

	for _, word := range []string{"ping", "pong"} {
		ctx, cancel := context.WithCancel(testCtx(t))
		inR, inW := io.Pipe()
		out := &testutil.LockedBuffer{}
		done := make(chan error, 1)
		go func() { done <- d.Attach(ctx, cfg.ID, driver.IO{Stdin: inR, Stdout: out}) }()
		if _, err := io.WriteString(inW, word+"\n"); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, waitLimit, "the echo of "+word, func() bool { return strings.Contains(out.String(), "got "+word) })
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Attach: %v", err)
		}
		inW.Close()
	}
	if strings.Contains(drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "stdin closed") {
		t.Error("the workload saw end of input after a detach")
	}
	st, err := d.Status(testCtx(t), cfg.ID)
	if err != nil || st.State != driver.StateRunning {
		t.Errorf("after detaching: %+v, %v; want still running", st, err)
	}

	// Attach ends when the workload stops. The echo of a word shows the
	// attachment is made before the stop.
	inR, inW := io.Pipe()
	out := &testutil.LockedBuffer{}
	done := make(chan error, 1)
	go func() { done <- d.Attach(testCtx(t), cfg.ID, driver.IO{Stdin: inR, Stdout: out}) }()
	if _, err := io.WriteString(inW, "last\n"); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, waitLimit, "the echo of last", func() bool { return strings.Contains(out.String(), "got last") })
	if err := d.Stop(testCtx(t), cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Attach: %v", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Attach did not return after the workload stopped")
	}

}

func scanLines(r io.Reader) <-chan string {
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

func expectLine(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got, ok := <-ch:
		if !ok || got != want {
			t.Fatalf("got line %q (open %v), want %q", got, ok, want)
		}
	case <-time.After(waitLimit):
		t.Fatalf("no line within %v, want %q", waitLimit, want)
	}
}

func expectEnd(t *testing.T, ch <-chan string) {
	t.Helper()
	select {
	case got, ok := <-ch:
		if ok {
			t.Fatalf("got line %q, want the end of the stream", got)
		}
	case <-time.After(waitLimit):
		t.Fatal("the stream did not end")
	}
}
