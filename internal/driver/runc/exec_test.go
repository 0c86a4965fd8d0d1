package runc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

func TestExecTty(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	ctx := testCtx(t)

	// A size queued before Exec is the terminal's size from the start.
	resize := make(chan driver.TermSize, 1)
	resize <- driver.TermSize{Rows: 33, Cols: 77}
	out := &testutil.LockedBuffer{}
	code, err := d.Exec(ctx, cfg.ID, driver.ExecConfig{
		Args: []string{"sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty; stty size; echo $TERM"},
		IO:   driver.IO{Stdout: out, Tty: true, Resize: resize},
	})
	if err != nil || code != 0 {
		t.Fatalf("tty exec: %d, %v; output %q", code, err, out.String())
	}
	for _, want := range []string{"on-a-tty", "33 77", "xterm"} {
		mustContain(t, "tty exec output", out.String(), want)
	}

	code, err = d.Exec(ctx, cfg.ID, driver.ExecConfig{Args: []string{"sh", "-c", "exit 5"}, IO: driver.IO{Tty: true}})
	if err != nil || code != 5 {
		t.Errorf("tty exit code %d, %v; want 5", code, err)
	}

	// Input through the terminal, and a resize while the process runs. The
	// resize is applied a moment after it is handed over, so the test asks
	// for the size until the new one shows.
	resize = make(chan driver.TermSize)
	inR, inW := io.Pipe()
	defer inW.Close()
	out = &testutil.LockedBuffer{}
	done := make(chan error, 1)
	go func() {
		code, err := d.Exec(ctx, cfg.ID, driver.ExecConfig{
			Args: []string{"sh", "-c", `while read l; do [ "$l" = quit ] && exit 4; echo size $(stty size); done`},
			IO:   driver.IO{Stdin: inR, Stdout: out, Tty: true, Resize: resize},
		})
		if err == nil && code != 4 {
			err = fmt.Errorf("exit code %d, want 4", code)
		}
		done <- err
	}()
	resize <- driver.TermSize{Rows: 40, Cols: 100}
	testutil.WaitFor(t, waitLimit, "the new size", func() bool {
		io.WriteString(inW, "size?\n")
		return strings.Contains(out.String(), "size 40 100")
	})
	io.WriteString(inW, "quit\n")
	if err := <-done; err != nil {
		t.Fatalf("interactive tty exec: %v; output %q", err, out.String())
	}
}

func TestExecPipes(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	drivertest.Run(t, testCtx(t), d, cfg)
	ctx := testCtx(t)

	var stdout, stderr strings.Builder
	code, err := d.Exec(ctx, cfg.ID, driver.ExecConfig{
		Args: []string{"sh", "-c", "test -t 0 || echo no-tty; cat; echo oops >&2; exit 7"},
		IO:   driver.IO{Stdin: strings.NewReader("from stdin\n"), Stdout: &stdout, Stderr: &stderr},
	})
	if err != nil || code != 7 {
		t.Fatalf("exec: %d, %v; want exit code 7", code, err)
	}
	if stdout.String() != "no-tty\nfrom stdin\n" || stderr.String() != "oops\n" {
		t.Errorf("stdout %q stderr %q", stdout.String(), stderr.String())
	}

	// Cancelling the context kills the process, not just the wait.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := d.Exec(cctx, cfg.ID, driver.ExecConfig{Args: []string{"sh", "-c", "echo $$ > /exec.pid; exec sleep 1000"}})
		done <- err
	}()
	testutil.WaitFor(t, waitLimit, "the exec to start", func() bool {
		_, code := drivertest.Exec(t, testCtx(t), d, cfg.ID, "sh", "-c", "test -s /exec.pid")
		return code == 0
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled exec: %v, want context.Canceled", err)
	}
	testutil.WaitFor(t, waitLimit, "the cancelled process to be gone", func() bool {
		_, code := drivertest.Exec(t, testCtx(t), d, cfg.ID, "sh", "-c", "kill -0 $(cat /exec.pid)")
		return code != 0
	})
}
