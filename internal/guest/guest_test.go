package guest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/wire"
)

// These tests run the agent on the host, over a socket pair, with real
// processes and no chroot: everything but the VM itself.

const waitLimit = 30 * time.Second

type testAgent struct {
	agent  *Agent
	host   net.Conn
	output *testutil.LockedBuffer
	status *testutil.LockedBuffer
	exited chan int
}

func startAgent(t *testing.T) *testAgent {
	t.Helper()
	host, guestEnd := net.Pipe()
	ta := &testAgent{host: host, output: &testutil.LockedBuffer{}, status: &testutil.LockedBuffer{}, exited: make(chan int, 1)}
	a := NewAgent(AgentOptions{
		Stream: guestEnd, Output: ta.output, Status: ta.status,
		Exited: func(code int) { ta.exited <- code },
	})
	ta.agent = a
	go a.Serve()
	t.Cleanup(func() { host.Close(); guestEnd.Close() })
	return ta
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return c
}

func connect(t *testing.T, conn net.Conn) *Client {
	t.Helper()
	c, err := Handshake(ctx(t), conn)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func configure(t *testing.T, c *Client, args ...string) {
	t.Helper()
	err := c.Configure(ctx(t), Config{Process: Process{Args: args, Env: []string{"PATH=/usr/bin:/bin", "SECRET=s3cret"}}})
	if err != nil {
		t.Fatal(err)
	}
}

func TestExecAndOutput(t *testing.T) {
	ta := startAgent(t)
	c := connect(t, ta.host)
	configure(t, c, "sh", "-c", "echo started; echo $SECRET >&2; exec sleep 1000")
	if err := c.Configure(ctx(t), Config{Process: Process{Args: []string{"true"}}}); !errors.Is(err, ErrConfigured) {
		t.Errorf("second configure: %v, want ErrConfigured", err)
	}

	var out, errb bytes.Buffer
	code, err := c.Exec(ctx(t), Process{Args: []string{"sh", "-c", "cat; echo err >&2; exit 5"}},
		driver.IO{Stdin: strings.NewReader("in\n"), Stdout: &out, Stderr: &errb})
	if err != nil || code != 5 || out.String() != "in\n" || errb.String() != "err\n" {
		t.Errorf("exec = %d, %v, out %q, err %q; want 5, in, err", code, err, out.String(), errb.String())
	}
	if _, err := c.Exec(ctx(t), Process{Args: []string{"/no/such/binary"}}, driver.IO{}); err == nil {
		t.Error("exec of a missing binary: want an error")
	}
	deadline := time.Now().Add(waitLimit)
	// Two pipes: the order between stdout and stderr is not kept.
	for o := ta.output.String(); !strings.Contains(o, "started\n") || !strings.Contains(o, "s3cret\n"); o = ta.output.String() {
		if time.Now().After(deadline) {
			t.Fatalf("workload output = %q", ta.output.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(ta.status.String(), `"state":"running"`) {
		t.Errorf("status journal = %q, want a running event", ta.status.String())
	}

	if err := c.Shutdown(ctx(t), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-ta.exited:
		if code != 128+15 {
			t.Errorf("exit code after shutdown = %d, want 143 (SIGTERM)", code)
		}
	case <-time.After(waitLimit):
		t.Fatal("workload did not end after shutdown")
	}
	if !strings.Contains(ta.status.String(), `"state":"exited","exit_code":143`) {
		t.Errorf("status journal = %q, want the exit", ta.status.String())
	}
}

// A host that reconnects finds the stream after whatever an earlier
// connection left in it, and the agent drops the old sessions.
func TestResync(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// A relay in the place of QEMU: one agent stream, host connections
	// that come and go, bytes from a dead connection still in flight.
	hostSide, guestSide := net.Pipe()
	a := NewAgent(AgentOptions{Stream: guestSide})
	go a.Serve()
	var mu sync.Mutex
	var current net.Conn
	go func() {
		// One reader of the agent's output, sending it to whichever host
		// is connected; what a dead connection gets is lost, as in QEMU.
		buf := make([]byte, 4096)
		for {
			n, err := hostSide.Read(buf)
			mu.Lock()
			if n > 0 && current != nil {
				current.Write(buf[:n])
			}
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			current = conn
			mu.Unlock()
			buf := make([]byte, 4096)
			for {
				n, err := conn.Read(buf)
				if n > 0 {
					hostSide.Write(buf[:n])
				}
				if err != nil {
					break
				}
			}
		}
	}()

	conn, err := DialUnix(ctx(t), sock)
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, conn)
	configure(t, c, "sleep", "1000")
	// Half a frame, as a daemon killed mid-write leaves.
	w := wire.NewWriter(conn)
	w.WriteFrame(Open, putChan(99, []byte(`{"op":"ex`))[:6])
	c.Close()

	conn2, err := DialUnix(ctx(t), sock)
	if err != nil {
		t.Fatal(err)
	}
	c2 := connect(t, conn2)
	var out bytes.Buffer
	if code, err := c2.Exec(ctx(t), Process{Args: []string{"echo", "resynced"}}, driver.IO{Stdout: &out}); err != nil || code != 0 || out.String() != "resynced\n" {
		t.Errorf("exec after reconnect = %d, %v, %q", code, err, out.String())
	}
	if err := c2.Shutdown(ctx(t), 0); err != nil {
		t.Error(err)
	}
}

// Hybrid vsock, as Firecracker and Cloud Hypervisor offer it: the host
// connects to the VMM's Unix socket and writes CONNECT <port>, the VMM
// answers OK and joins it to a connection the guest accepts on that vsock
// port. A stand-in VMM does the joining here, and a Unix listener stands
// in for the guest's vsock listener. Each host connection is new to the
// agent, and the workload lives on across them.
func TestHybridVsock(t *testing.T) {
	dir := t.TempDir()
	guestPort := filepath.Join(dir, "guest-1024")
	gl, err := net.Listen("unix", guestPort)
	if err != nil {
		t.Fatal(err)
	}
	defer gl.Close()
	go NewAgent(AgentOptions{}).ServeListener(gl)

	vmm := filepath.Join(dir, "vsock")
	l, err := net.Listen("unix", vmm)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			host, err := l.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(host)
			if line, _ := br.ReadString('\n'); line != "CONNECT 1024\n" {
				host.Close()
				continue
			}
			g, err := net.Dial("unix", guestPort)
			if err != nil {
				host.Close()
				continue
			}
			fmt.Fprint(host, "OK 1073741824\n")
			go func() { io.Copy(g, br); g.Close() }()
			go func() { io.Copy(host, g); host.Close() }()
		}
	}()

	for i, first := range []bool{true, false} {
		conn, err := DialHybridVsock(ctx(t), vmm, 1024)
		if err != nil {
			t.Fatal(err)
		}
		c := connect(t, conn)
		err = c.Configure(ctx(t), Config{Process: Process{Args: []string{"sleep", "1000"}}})
		if first && err != nil || !first && !errors.Is(err, ErrConfigured) {
			t.Errorf("connection %d: configure = %v", i+1, err)
		}
		var out bytes.Buffer
		if code, err := c.Exec(ctx(t), Process{Args: []string{"echo", "over vsock"}}, driver.IO{Stdout: &out}); err != nil || code != 0 || out.String() != "over vsock\n" {
			t.Errorf("connection %d: exec = %d, %v, %q", i+1, code, err, out.String())
		}
		if !first {
			if err := c.Shutdown(ctx(t), 0); err != nil {
				t.Error(err)
			}
		}
		c.Close()
	}
}

// Attach sees the main process's output and feeds its input; detaching
// leaves it running.
func TestAttach(t *testing.T) {
	if _, err := os.Stat("/bin/cat"); err != nil {
		t.Skip("no /bin/cat")
	}
	ta := startAgent(t)
	c := connect(t, ta.host)
	configure(t, c, "cat")
	in := strings.NewReader("hello attach\n")
	var out testutil.LockedBuffer
	actx, cancel := context.WithCancel(ctx(t))
	done := make(chan error, 1)
	go func() { done <- c.Attach(actx, driver.IO{Stdin: in, Stdout: &out}) }()
	deadline := time.Now().Add(waitLimit)
	for out.String() != "hello attach\n" {
		if time.Now().After(deadline) {
			t.Fatalf("attach output = %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("detach: %v", err)
	}
	if err := c.Signal(ctx(t), 9); err != nil {
		t.Errorf("signal: %v", err)
	}
	select {
	case code := <-ta.exited:
		if code != 137 {
			t.Errorf("exit after SIGKILL = %d, want 137", code)
		}
	case <-time.After(waitLimit):
		t.Fatal("workload did not end after SIGKILL")
	}
}
