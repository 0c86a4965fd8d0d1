package e2e

import (
	"io"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/console"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// attachOnPty runs `hypercore attach id` on a real terminal of the given
// size, types line into it (Enter included) and waits until the terminal
// shows every one of wants. The client is killed when it returns.
func attachOnPty(t *testing.T, n *harness.Node, id string, rows, cols uint16, line string, wants ...string) {
	t.Helper()
	master, slavePath, err := console.NewPty()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	if err := master.Resize(console.WinSize{Height: rows, Width: cols}); err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(slavePath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := n.NS.Command(n.Bin, "--data-dir", n.DataDir, "attach", id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	out := &testutil.LockedBuffer{} // what the terminal shows
	copied := make(chan struct{})
	go func() { io.Copy(out, master); close(copied) }()

	// A user presses Enter, which the raw terminal sends as \r and the
	// workload's terminal turns into \n.
	if _, err := io.WriteString(master, line+"\r"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for {
		shown := out.String()
		missing := ""
		for _, w := range wants {
			if !strings.Contains(shown, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			// Ctrl-P Ctrl-Q detaches: the CLI ends cleanly and the
			// workload keeps running (the next attach proves it).
			io.WriteString(master, "\x10\x11")
			select {
			case err := <-exited:
				exited <- err
				if err != nil {
					t.Fatalf("detach: attach exited with %v; terminal showed %q", err, out.String())
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("Ctrl-P Ctrl-Q did not detach; terminal showed %q", out.String())
			}
			return
		}
		select {
		case err := <-exited:
			exited <- err
			// Its last words: the copy ends once the terminal is closed.
			select {
			case <-copied:
			case <-time.After(2 * time.Second):
			}
			t.Fatalf("attach exited (%v) before showing %q; terminal showed %q", err, missing, out.String())
		case <-deadline:
			t.Fatalf("attach did not show %q; terminal showed %q", missing, shown)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestAttachTty spawns a workload with a terminal, attaches to it from a
// real terminal whose size it takes, kills the daemon with -9 and attaches
// again through the new daemon.
func TestAttachTty(t *testing.T) {
	n, ref := newNode(t)
	id := cliSpawn(t, n, "-t", "--memory", "32", ref, "--",
		"sh", "-c", `while read l; do echo "got $l"; echo "size $(stty size)"; done`)

	attachOnPty(t, n, id, 33, 77, "hello", "got hello", "size 33 77")

	n.Kill9()
	n.Start()
	// Another size this time: resizing works on the terminal the new
	// daemon took back from the container.
	attachOnPty(t, n, id, 41, 99, "again", "got again", "size 41 99")

	out, err := n.CLI("logs", id)
	if err != nil || !strings.Contains(out, "got hello") || !strings.Contains(out, "got again") {
		t.Fatalf("logs of the tty workload: %v\n%s", err, out)
	}
	// sh as pid 1 ignores SIGTERM: a short timeout, then SIGKILL.
	if out, err := n.CLI("stop", "--timeout", "1", id); err != nil {
		t.Fatalf("stop: %v %q", err, out)
	}
	if out, err := n.CLI("rm", id); err != nil {
		t.Fatalf("rm: %v %q", err, out)
	}
}
