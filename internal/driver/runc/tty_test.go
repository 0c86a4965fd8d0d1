package runc

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// ttyScript reports on its terminal, then echoes lines with the terminal's
// size after each, and says when it gets SIGINT (Ctrl-C on a controlling
// terminal). A read cut short by the signal fails once; a hung-up terminal
// fails every time, and then the script ends rather than spin (as pid 1 it
// ignores the SIGHUP).
const ttyScript = `trap 'echo got INT' INT
test -t 0 && test -t 1 && echo on-a-tty
tty
echo start $(stty size)
fails=0
while [ $fails -lt 5 ]; do
	if read l; then fails=0; echo got $l; echo size $(stty size); else fails=$((fails+1)); fi
done`

func ttyConfig(rootfs string) driver.Config {
	cfg := testConfig(rootfs, "sh", "-c", ttyScript)
	cfg.Spec.Tty = true
	return cfg
}

// attachment is an Attach running in the background.
type attachment struct {
	in     *io.PipeWriter
	out    *testutil.LockedBuffer
	resize chan driver.TermSize
	cancel context.CancelFunc
	ended  chan struct{} // closed when Attach returned, with err
	err    error
}

// attach attaches to id with a terminal whose size is already queued, as
// the server queues the client's size before its input.
func attach(t *testing.T, d *Driver, id spec.ID, size driver.TermSize) *attachment {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	inR, inW := io.Pipe()
	a := &attachment{in: inW, out: &testutil.LockedBuffer{}, resize: make(chan driver.TermSize, 4), cancel: cancel, ended: make(chan struct{})}
	a.resize <- size
	go func() {
		defer close(a.ended)
		a.err = d.Attach(ctx, id, driver.IO{Stdin: inR, Stdout: a.out, Tty: true, Resize: a.resize})
	}()
	t.Cleanup(func() { cancel(); inW.Close() })
	return a
}

// typeText writes s to Attach's stdin; it fails the test if Attach ended
// instead of reading it.
func (a *attachment) typeText(t *testing.T, s string) {
	t.Helper()
	written := make(chan error, 1)
	go func() {
		_, err := io.WriteString(a.in, s)
		written <- err
	}()
	select {
	case err := <-written:
		if err != nil {
			t.Fatalf("type %q: %v", s, err)
		}
	case <-a.ended:
		t.Fatalf("Attach ended (%v) instead of reading %q; output %q", a.err, s, a.out.String())
	}
}

func (a *attachment) waitOutput(t *testing.T, wants ...string) {
	t.Helper()
	testutil.WaitFor(t, waitLimit, "attach output "+strings.Join(wants, ", "), func() bool {
		select {
		case <-a.ended:
			t.Fatalf("Attach ended (%v) before the output %q; output %q", a.err, wants, a.out.String())
		default:
		}
		for _, w := range wants {
			if !strings.Contains(a.out.String(), w) {
				return false
			}
		}
		return true
	})
}

// detach ends the attachment and checks Attach returned without error.
func (a *attachment) detach(t *testing.T) {
	t.Helper()
	a.cancel()
	a.wait(t)
	a.in.Close()
}

func (a *attachment) wait(t *testing.T) {
	t.Helper()
	select {
	case <-a.ended:
		if a.err != nil {
			t.Fatalf("Attach: %v; output %q", a.err, a.out.String())
		}
	case <-time.After(waitLimit):
		t.Fatal("Attach did not return")
	}
}

// echoes types a line into the workload's terminal through a new
// attachment of the given size and checks the answer and the size.
func echoes(t *testing.T, d *Driver, id spec.ID, word string, size driver.TermSize) {
	t.Helper()
	a := attach(t, d, id, size)
	a.typeText(t, word+"\n")
	a.waitOutput(t, "got "+word, "size "+sizeText(size))
	a.detach(t)
}

func sizeText(s driver.TermSize) string { return fmt.Sprintf("%d %d", s.Rows, s.Cols) }

// TestAttachTty attaches to a workload that runs on a terminal, resizes it
// and interrupts it, lets the Driver go as a killed daemon would, and
// attaches again through a new Driver, which has to take the terminal back
// from the container.
func TestAttachTty(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	cfg := ttyConfig(testRootfs(t))
	drivertest.Run(t, testCtx(t), d, cfg)
	ctx := testCtx(t)

	// The terminal is the process's controlling terminal, made in the
	// container, with the default size until someone attaches.
	testutil.WaitFor(t, waitLimit, "the script's greeting in the log", func() bool {
		return strings.Contains(drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "start 24 80")
	})
	greeting := drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{})
	mustContain(t, "log", greeting, "on-a-tty")
	mustContain(t, "log", greeting, "/dev/pts/0")

	a := attach(t, d, cfg.ID, driver.TermSize{Rows: 40, Cols: 100})
	a.typeText(t, "hello\n")
	a.waitOutput(t, "got hello", "size 40 100")
	// Ctrl-C reaches the foreground process group as SIGINT.
	a.typeText(t, "\x03")
	a.typeText(t, "after\n")
	a.waitOutput(t, "got INT", "got after")
	// A resize while attached.
	a.resize <- driver.TermSize{Rows: 50, Cols: 120}
	testutil.WaitFor(t, waitLimit, "the new size", func() bool {
		a.typeText(t, "size?\n")
		return strings.Contains(a.out.String(), "size 50 120")
	})
	a.detach(t)
	// Attaching does not take output away from the log.
	log := drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{})
	for _, want := range []string{"got hello", "size 40 100", "got INT", "got after", "size 50 120"} {
		mustContain(t, "log", log, want)
	}

	// Two clients at once both see the output.
	a1 := attach(t, d, cfg.ID, driver.TermSize{Rows: 20, Cols: 60})
	a2 := attach(t, d, cfg.ID, driver.TermSize{Rows: 20, Cols: 60})
	testutil.WaitFor(t, waitLimit, "both attachments", func() bool {
		a1.typeText(t, "both\n")
		return strings.Contains(a1.out.String(), "got both") && strings.Contains(a2.out.String(), "got both")
	})
	a1.detach(t)
	a2.detach(t)

	// The daemon goes away: all it held is closed. The container alone
	// keeps its terminal, and what the workload writes meanwhile waits in
	// the terminal's buffer.
	d.Close()
	if pumps := d.ttys.m; len(pumps) != 0 {
		t.Fatalf("Close left %d pumps", len(pumps))
	}
	d2 := restarted(t, d)
	drivertest.ExecOK(t, testCtx(t), d2, cfg.ID, "sh", "-c", "echo written while away > /proc/1/fd/1")
	if st, err := d2.Status(ctx, cfg.ID); err != nil || st.State != driver.StateRunning {
		t.Fatalf("with no daemon holding the terminal: %+v, %v; want running", st, err)
	}
	// Nothing recovered yet: the first use adopts the terminal.
	testutil.WaitFor(t, waitLimit, "output written while away to reach the log", func() bool {
		return strings.Contains(drivertest.Logs(t, testCtx(t), d2, cfg.ID, driver.LogOptions{}), "written while away")
	})
	echoes(t, d2, cfg.ID, "again", driver.TermSize{Rows: 30, Cols: 90})
	// And once more: taking the terminal back leaves it with the container.
	d2.Close()
	d2 = restarted(t, d2)
	echoes(t, d2, cfg.ID, "thrice", driver.TermSize{Rows: 31, Cols: 91})

	// Attach ends when the workload stops; Stop closes the terminal.
	a = attach(t, d2, cfg.ID, driver.TermSize{Rows: 30, Cols: 90})
	a.typeText(t, "last\n")
	a.waitOutput(t, "got last")
	if err := d2.Stop(ctx, cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	a.wait(t)
	if d2.ttys.get(cfg.ID) != nil {
		t.Error("Stop left the terminal's pump running")
	}

	// Start again: a new terminal, pumped to the same log.
	if err := d2.Start(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	echoes(t, d2, cfg.ID, "restarted", driver.TermSize{Rows: 25, Cols: 81})
	if n := strings.Count(drivertest.Logs(t, testCtx(t), d2, cfg.ID, driver.LogOptions{}), "on-a-tty"); n != 2 {
		t.Errorf("log has %d greetings, want 2 (one per start)", n)
	}
	if err := d2.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	if d2.ttys.get(cfg.ID) != nil {
		t.Error("Delete left the terminal's pump running")
	}
	if err := d2.Attach(ctx, cfg.ID, driver.IO{Tty: true}); err == nil {
		t.Error("Attach to a deleted workload returned no error")
	}
}

// TestAttachTtyLost: a workload that closes the fd holding its terminal
// keeps running; a restarted daemon cannot attach and says why.
func TestAttachTtyLost(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	cfg := testConfig(testRootfs(t), "sh", "-c", "exec 3>&-; echo closed; while true; do read l; done")
	cfg.Spec.Tty = true
	drivertest.Run(t, testCtx(t), d, cfg)
	testutil.WaitFor(t, waitLimit, "the workload to close fd 3", func() bool {
		return strings.Contains(drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "closed")
	})
	d.Close()
	d2 := restarted(t, d)
	err := d2.Attach(testCtx(t), cfg.ID, driver.IO{Tty: true})
	if err == nil || !strings.Contains(err.Error(), "closed its fd 3") {
		t.Fatalf("Attach after the terminal was lost: %v, want an error saying why", err)
	}
	if st, err := d2.Status(testCtx(t), cfg.ID); err != nil || st.State != driver.StateRunning {
		t.Errorf("after losing its terminal: %+v, %v; want still running", st, err)
	}
}

// TestAttachTtyToPlainWorkload: a client with a terminal attaching to a
// workload that has none gets its output and input, and no error.
func TestAttachTtyToPlainWorkload(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	cfg := testConfig(testRootfs(t), "sh", "-c", `while read l; do echo "got $l"; done`)
	drivertest.Run(t, testCtx(t), d, cfg)
	a := attach(t, d, cfg.ID, driver.TermSize{Rows: 10, Cols: 10})
	a.typeText(t, "plain\n")
	a.waitOutput(t, "got plain")
	a.detach(t)
}

// TestAttachTtyNoLeaks runs the whole life of a tty workload with attaches
// and checks the test process has no more fds or goroutines afterwards. It
// is not parallel, so nothing else opens files meanwhile.
func TestAttachTtyNoLeaks(t *testing.T) {
	d := newTestDriver(t, "runc")
	rootfs := testRootfs(t)
	cycle := func() {
		cfg := ttyConfig(rootfs)
		drivertest.Run(t, testCtx(t), d, cfg)
		echoes(t, d, cfg.ID, "one", driver.TermSize{Rows: 11, Cols: 22})
		echoes(t, d, cfg.ID, "two", driver.TermSize{Rows: 12, Cols: 23})
		if err := d.Stop(testCtx(t), cfg.ID, 0); err != nil {
			t.Fatal(err)
		}
		if err := d.Start(testCtx(t), cfg.ID); err != nil {
			t.Fatal(err)
		}
		echoes(t, d, cfg.ID, "three", driver.TermSize{Rows: 13, Cols: 24})
		if err := d.Delete(testCtx(t), cfg.ID); err != nil {
			t.Fatal(err)
		}
	}
	cycle() // warms up what the runtime opens once (poller, ...)
	fds, masters := openFds(t)
	goroutines := runtime.NumGoroutine()
	cycle()
	testutil.WaitFor(t, waitLimit, "goroutines to end", func() bool { return runtime.NumGoroutine() <= goroutines })
	if n, m := openFds(t); n > fds || m != 0 || masters != 0 {
		t.Errorf("open fds %d, pty masters %d after a tty workload's life; %d and %d before", n, m, fds, masters)
	}
}

// openFds counts the test process's open fds, and among them pty masters.
func openFds(t *testing.T) (all, masters int) {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc/self/fd", e.Name()), &st) != nil {
			continue // the fd ReadDir itself used
		}
		all++
		if st.Mode&unix.S_IFMT == unix.S_IFCHR && unix.Major(st.Rdev) == 5 && unix.Minor(st.Rdev) == 2 {
			masters++
		}
	}
	return all, masters
}
