package peer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// TestExec runs real processes on the host through the stream: stdin in
// and its end, stdout and stderr apart, env and work dir, the exit code,
// output larger than one message.
func TestExec(t *testing.T) {
	f := newFakeNode(t)
	p := f.tc.pool(t, "beta")
	ctx := testCtx(t)
	addr := f.tc.addr

	var stdout, stderr bytes.Buffer
	code, err := p.Exec(ctx, "alpha", addr, known, driver.ExecConfig{
		Args:    []string{"sh", "-c", `read x; echo "out:$x:$FOO:$(pwd)"; echo "err:$x" >&2; cat; exit 3`},
		Env:     []string{"FOO=bar", "PATH=/usr/bin:/bin"},
		WorkDir: "/tmp",
		IO:      driver.IO{Stdin: strings.NewReader("world\nrest of stdin"), Stdout: &stdout, Stderr: &stderr},
	})
	if err != nil || code != 3 {
		t.Fatalf("exec: code %d, %v; want 3", code, err)
	}
	if got := stdout.String(); got != "out:world:bar:/tmp\nrest of stdin" {
		t.Errorf("stdout %q", got)
	}
	if got := stderr.String(); got != "err:world\n" {
		t.Errorf("stderr %q", got)
	}

	// More output than one message holds, and a zero exit; no stdin at
	// all is an empty stdin.
	stdout.Reset()
	code, err = p.Exec(ctx, "alpha", addr, known, driver.ExecConfig{
		Args: []string{"sh", "-c", "cat; head -c 300000 /dev/zero"},
		IO:   driver.IO{Stdout: &stdout},
	})
	if err != nil || code != 0 || stdout.Len() != 300000 {
		t.Fatalf("exec: code %d, %v, %d bytes of stdout; want 0 and 300000", code, err, stdout.Len())
	}

	if _, err := p.Exec(ctx, "alpha", addr, spec.NewID(), driver.ExecConfig{Args: []string{"true"}}); !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("exec in an unknown workload: %v, want workload.ErrNotFound", err)
	}
	if _, err := p.Exec(ctx, "alpha", addr, known, driver.ExecConfig{}); err == nil || !strings.Contains(err.Error(), "cmd") {
		t.Fatalf("exec of nothing: %v, want the host's refusal", err)
	}
}

// TestExecCancel: ending the caller's context ends the process on the
// host.
func TestExecCancel(t *testing.T) {
	f := newFakeNode(t)
	p := f.tc.pool(t, "beta")
	ctx, cancel := ctxWithCancel(t)
	started := make(chan struct{})
	out := &notifyWriter{first: started}
	done := make(chan error, 1)
	go func() {
		_, err := p.Exec(ctx, "alpha", f.tc.addr, known, driver.ExecConfig{
			Args: []string{"sh", "-c", "echo up; sleep 60"}, IO: driver.IO{Stdout: out},
		})
		done <- err
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the process did not start")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("a cancelled exec: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("exec did not end with its context")
	}
}

// TestAttach: stdin, its end and resizes reach the host (the first size
// before anything else), the output comes back, and with a tty the host
// writes stderr into stdout.
func TestAttach(t *testing.T) {
	f := newFakeNode(t)
	p := f.tc.pool(t, "beta")
	resize := make(chan driver.TermSize, 2)
	resize <- driver.TermSize{Rows: 24, Cols: 80}
	stdinR, stdinW := io.Pipe()
	var stdout, stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		done <- p.Attach(testCtx(t), "alpha", f.tc.addr, known, driver.IO{
			Stdin: stdinR, Stdout: &stdout, Stderr: &stderr, Tty: true, Resize: resize,
		})
	}()
	testutil.WaitFor(t, 10*time.Second, "the first size", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.resizes) == 1
	})
	resize <- driver.TermSize{Rows: 50, Cols: 132}
	testutil.WaitFor(t, 10*time.Second, "the resize", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.resizes) == 2
	})
	io.WriteString(stdinW, "hello ")
	io.WriteString(stdinW, "there")
	stdinW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("attach did not end when the process did")
	}
	if got := stdout.String(); got != "HELLO THEREtty=true" || stderr.Len() != 0 {
		t.Errorf("stdout %q, stderr %q", got, stderr.String())
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if want := []driver.TermSize{{Rows: 24, Cols: 80}, {Rows: 50, Cols: 132}}; !slices.Equal(f.resizes, want) {
		t.Errorf("sizes %v, want %v", f.resizes, want)
	}

	if err := p.Attach(testCtx(t), "alpha", f.tc.addr, spec.NewID(), driver.IO{}); !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("attach to an unknown workload: %v, want workload.ErrNotFound", err)
	}
}
