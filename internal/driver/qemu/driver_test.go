package qemu

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/logfile"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

func execOut(t *testing.T, d *Driver, id spec.ID, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cfg := driver.ExecConfig{Args: args, IO: driver.IO{Stdout: &out, Stderr: &errb}}
	if stdin != "" {
		cfg.Stdin = strings.NewReader(stdin)
	}
	code, err := d.Exec(testCtx(t), id, cfg)
	if err != nil {
		t.Fatalf("exec %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// One VM through its whole life: boot, exec (output, stdin, exit codes,
// the guest's own kernel), logs, stats, graceful stop, logs after the
// end, delete.
func TestLifecycle(t *testing.T) {
	d := newTestDriver(t)
	cfg := testConfig(testRootfs(t), "sh", "-c", "echo hello from the guest; echo to stderr >&2; exec sleep 1000")
	boot(t, d, cfg)

	st, err := d.Status(testCtx(t), cfg.ID)
	if err != nil || st.State != driver.StateRunning || st.Pid <= 0 {
		t.Fatalf("status after start = %+v, %v; want running with a pid", st, err)
	}

	out, _, code := execOut(t, d, cfg.ID, "", "uname", "-r")
	if code != 0 || strings.TrimSpace(out) != d.opts.Kernel.Version {
		t.Errorf("uname -r in the guest = %q (exit %d), want the guest kernel %q", out, code, d.opts.Kernel.Version)
	}
	host, _ := exec.Command("uname", "-r").Output()
	if strings.TrimSpace(out) == strings.TrimSpace(string(host)) {
		t.Errorf("uname -r in the guest is the host's %q", host)
	}
	if out, _, _ := execOut(t, d, cfg.ID, "over stdin\n", "cat"); out != "over stdin\n" {
		t.Errorf("cat echoed %q, want the input back", out)
	}
	if _, errOut, code := execOut(t, d, cfg.ID, "", "sh", "-c", "echo oops >&2; exit 3"); code != 3 || errOut != "oops\n" {
		t.Errorf("exec exit = %d, stderr %q; want 3 and oops", code, errOut)
	}
	if out, _, _ := execOut(t, d, cfg.ID, "", "hostname"); strings.TrimSpace(out) != driver.HostnameOf(cfg) {
		t.Errorf("guest hostname = %q, want %q", out, driver.HostnameOf(cfg))
	}
	// The root is writable (overlay) while the image disk is not.
	if _, errOut, code := execOut(t, d, cfg.ID, "", "sh", "-c", "echo x > /written && cat /written"); code != 0 {
		t.Errorf("writing to the guest root failed: %s", errOut)
	}

	testutil.WaitFor(t, waitLimit, "the workload's output in the log", func() bool {
		l := drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{})
		return strings.Contains(l, "hello from the guest\n") && strings.Contains(l, "to stderr\n")
	})

	stats, err := d.Stats(testCtx(t), cfg.ID)
	if err != nil || stats.MemoryBytes == 0 || stats.MemoryLimit != 256<<20 {
		t.Errorf("stats = %+v, %v; want QEMU's RSS and a 256 MiB limit", stats, err)
	}

	if err := d.Stop(testCtx(t), cfg.ID, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err = d.Status(testCtx(t), cfg.ID)
	if err != nil || st.State != driver.StateStopped || st.ExitCode != 128+15 {
		t.Errorf("status after stop = %+v, %v; want stopped by SIGTERM in the guest (143), not killed", st, err)
	}
	if _, err := os.Stat(d.paths(cfg.ID).killed); err == nil {
		t.Error("the VM was killed, not shut down by its agent")
	}
	if l := drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}); !strings.Contains(l, "hello from the guest") {
		t.Errorf("logs after stop = %q; want the output kept", l)
	}

	if err := d.Delete(testCtx(t), cfg.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Status(testCtx(t), cfg.ID); err == nil {
		t.Error("status after delete: want ErrNotFound")
	}
}

// A workload that ends by itself ends its VM, with its exit code kept.
func TestWorkloadExit(t *testing.T) {
	d := newTestDriver(t)
	cfg := testConfig(testRootfs(t), "sh", "-c", "echo bye; exit 7")
	boot(t, d, cfg)
	var st driver.Status
	testutil.WaitFor(t, waitLimit, "the VM to end", func() bool {
		st, _ = d.Status(testCtx(t), cfg.ID)
		return st.State == driver.StateStopped
	})
	if st.ExitCode != 7 {
		t.Errorf("exit code = %d, want 7", st.ExitCode)
	}
	if l := drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}); l != "bye\n" {
		t.Errorf("logs = %q, want bye", l)
	}
}

// A new driver on the same state dir, as after kill -9 of the daemon,
// finds the VM running and talks to its agent, which drops the old
// connection's sessions.
func TestRecover(t *testing.T) {
	k, _ := testKernel(t)
	dir := t.TempDir()
	d := newDriverAt(t, dir, k)
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	boot(t, d, cfg)
	// An exec in flight when the daemon dies.
	go d.Exec(context.Background(), cfg.ID, driver.ExecConfig{Args: []string{"sleep", "1000"}})
	time.Sleep(200 * time.Millisecond)

	d2 := newDriverAt(t, dir, k)
	d.dropClient(cfg.ID) // the old daemon's connection dies with it
	st, err := d2.Recover(testCtx(t), cfg)
	if err != nil || st.State != driver.StateRunning {
		t.Fatalf("recover = %+v, %v; want running", st, err)
	}
	if out, _, code := execOut(t, d2, cfg.ID, "", "echo", "still here"); code != 0 || out != "still here\n" {
		t.Errorf("exec after recover = %q, %d", out, code)
	}
	if err := d2.Stop(testCtx(t), cfg.ID, 0); err != nil {
		t.Fatal(err)
	}
	if st, _ := d2.Status(testCtx(t), cfg.ID); st.State != driver.StateStopped || st.ExitCode != 137 {
		t.Errorf("status after kill = %+v, want stopped with 137", st)
	}
}

// Exec with a terminal: the process sees a tty of the size sent.
func TestExecTty(t *testing.T) {
	d := newTestDriver(t)
	cfg := testConfig(testRootfs(t), "sleep", "1000")
	boot(t, d, cfg)
	resize := make(chan driver.TermSize, 1)
	resize <- driver.TermSize{Rows: 40, Cols: 100}
	var out bytes.Buffer
	code, err := d.Exec(testCtx(t), cfg.ID, driver.ExecConfig{
		Args: []string{"stty", "size"},
		IO:   driver.IO{Stdout: &out, Tty: true, Resize: resize},
	})
	if err != nil || code != 0 {
		t.Fatalf("exec stty = %d, %v: %s", code, err, out.String())
	}
	if got := strings.TrimSpace(out.String()); got != "40 100" {
		t.Errorf("stty size = %q, want 40 100", got)
	}
}

// Attach reaches the main process's stdin and stdout.
func TestAttach(t *testing.T) {
	d := newTestDriver(t)
	cfg := testConfig(testRootfs(t), "cat")
	boot(t, d, cfg)
	pr, pw := io.Pipe()
	var out testutil.LockedBuffer
	ctx, cancel := context.WithCancel(testCtx(t))
	done := make(chan error, 1)
	go func() { done <- d.Attach(ctx, cfg.ID, driver.IO{Stdin: pr, Stdout: &out}) }()
	pw.Write([]byte("through attach\n"))
	testutil.WaitFor(t, waitLimit, "cat to echo through attach", func() bool { return strings.Contains(out.String(), "through attach\n") })
	cancel()
	if err := <-done; err != nil {
		t.Errorf("attach: %v", err)
	}
	// Detaching left the process running.
	if st, _ := d.Status(testCtx(t), cfg.ID); st.State != driver.StateRunning {
		t.Errorf("after detach: %+v, want running", st)
	}
}

// A workload with a terminal: attach types into it and sees its echo,
// and what it shows lands in the log too.
func TestTtyWorkload(t *testing.T) {
	d := newTestDriver(t)
	cfg := testConfig(testRootfs(t), "sh")
	cfg.Spec.Tty = true
	boot(t, d, cfg)
	pr, pw := io.Pipe()
	var out testutil.LockedBuffer
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	go d.Attach(ctx, cfg.ID, driver.IO{Stdin: pr, Stdout: &out, Tty: true})
	go pw.Write([]byte("echo $((6*7))\n"))
	testutil.WaitFor(t, waitLimit, "the shell's answer through attach", func() bool { return strings.Contains(out.String(), "42") })
	testutil.WaitFor(t, waitLimit, "the shell's answer in the log", func() bool {
		return strings.Contains(drivertest.Logs(t, testCtx(t), d, cfg.ID, driver.LogOptions{}), "42")
	})
}

// QEMU appends the output log with O_APPEND, so copy-and-truncate rotation
// works under it: after a rotation its next write lands at the start of
// the file, not after a hole as long as the old log.
func TestLogRotation(t *testing.T) {
	d := newTestDriver(t)
	cfg := testConfig(testRootfs(t), "sh", "-c", "while true; do echo tick; sleep 0.2; done")
	boot(t, d, cfg)
	p := d.paths(cfg.ID)
	testutil.WaitFor(t, waitLimit, "some output", func() bool { st, err := os.Stat(p.log); return err == nil && st.Size() > 20 })
	if err := logfile.Rotate(p.log, 1, 2); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(p.log + ".1"); err != nil || !strings.HasPrefix(string(b), "tick\n") {
		t.Fatalf("rotated generation = %q, %v", b, err)
	}
	testutil.WaitFor(t, waitLimit, "output after the rotation", func() bool {
		b, _ := os.ReadFile(p.log)
		return len(b) > 0
	})
	// A writer without O_APPEND would leave the old length as zeros.
	b, _ := os.ReadFile(p.log)
	if b[0] == 0 || !strings.Contains(string(b), "tick\n") {
		t.Errorf("log after rotation starts with %q, want new output at offset 0", b[:min(len(b), 16)])
	}
}
