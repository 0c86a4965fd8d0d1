package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/wire"
)

// readSession reads frames until the session's last one (Exit or Error)
// and returns what each stream carried and how it ended.
func readSession(t *testing.T, r *bufio.Reader) (out map[wire.Type]string, last wire.Type, payload []byte) {
	t.Helper()
	out = map[wire.Type]string{}
	for {
		typ, p, err := wire.ReadFrame(r)
		if err != nil {
			t.Fatalf("reading frames: %v (so far %q)", err, out)
		}
		switch typ {
		case wire.Exit, wire.Error:
			return out, typ, p
		}
		out[typ] += string(p)
	}
}

// TestExecStream runs a command over the upgraded connection: stdin
// frames reach the process, its stdout and stderr come back as their own
// frames, and the exit code ends the session.
func TestExecStream(t *testing.T) {
	b := newBackend(t)
	a := newAPI(t, b)
	w := b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`"}`))
	b.set(func() { b.exitCode = 7 })
	resp, br, conn := a.dialUpgrade("/v1/workloads/" + w.ID.String() + "/exec?cmd=sh&cmd=-c&cmd=cat&env=A=b&user=app:1000&workdir=/srv")
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != StreamProtocol {
		t.Fatalf("exec: %s %v, want 101 to %s", resp.Status, resp.Header, StreamProtocol)
	}
	fw := wire.NewWriter(conn)
	fw.WriteFrame(wire.Stdin, []byte("ping\n"))
	fw.WriteFrame(wire.Stdin, []byte("pong\n"))
	fw.WriteFrame(wire.CloseStdin, nil)
	out, last, p := readSession(t, br)
	if last != wire.Exit {
		t.Fatalf("session ended with frame %d %q, want an exit", last, p)
	}
	if code, _ := wire.DecodeExit(p); code != 7 {
		t.Errorf("exit code %d, want 7", code)
	}
	if out[wire.Stdout] != "ping\npong\n" || out[wire.Stderr] != "err\n" {
		t.Errorf("streams %q, want stdin echoed on stdout and err on stderr", out)
	}
	if len(b.execs) != 1 || !reflect.DeepEqual(b.execs[0].Args, []string{"sh", "-c", "cat"}) ||
		!reflect.DeepEqual(b.execs[0].Env, []string{"A=b"}) || b.execs[0].Tty || b.execs[0].User != "app:1000" || b.execs[0].WorkDir != "/srv" {
		t.Errorf("backend got %+v, want sh -c cat with A=b, as app:1000 in /srv, and no tty", b.execs)
	}
	for _, q := range []string{"user=a%20b", "workdir=relative"} {
		if r := a.call("POST", "/v1/workloads/"+w.ID.String()+"/exec?cmd=true&"+q, ""); r.code != http.StatusBadRequest {
			t.Errorf("exec with %s: %d %s, want 400", q, r.code, r.body)
		}
	}
}

// TestExecStreamError checks that a failure of the backend after the
// upgrade reaches the client as an Error frame with its text.
func TestExecStreamError(t *testing.T) {
	b := newBackend(t)
	a := newAPI(t, b)
	w := b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`"}`))
	b.set(func() { b.execErr = errors.New("runtime exploded") })
	resp, br, _ := a.dialUpgrade("/v1/workloads/" + w.ID.String() + "/exec?cmd=true")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("exec: %s", resp.Status)
	}
	if _, last, p := readSession(t, br); last != wire.Error || string(p) != "runtime exploded" {
		t.Errorf("session ended with frame %d %q, want the error", last, p)
	}
}

// TestAttachStream attaches to a workload with a terminal: the driver is
// told about the tty, stderr is folded into stdout, and resize frames
// arrive as sizes.
func TestAttachStream(t *testing.T) {
	b := newBackend(t)
	a := newAPI(t, b)
	w := b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`","tty":true}`))
	b.set(func() {
		b.attach = func(stdio driver.IO) error {
			size, ok := <-stdio.Resize
			if !ok {
				return errors.New("resize channel closed before any size")
			}
			fmt.Fprintf(stdio.Stdout, "%dx%d\n", size.Rows, size.Cols)
			fmt.Fprintf(stdio.Stderr, "on stderr\n")
			_, err := io.Copy(stdio.Stdout, stdio.Stdin)
			return err
		}
	})
	resp, br, conn := a.dialUpgrade("/v1/workloads/" + w.ID.String() + "/attach")
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("attach: %s", resp.Status)
	}
	fw := wire.NewWriter(conn)
	fw.WriteFrame(wire.Resize, wire.EncodeResize(24, 80))
	fw.WriteFrame(wire.Stdin, []byte("typed"))
	fw.WriteFrame(wire.CloseStdin, nil)
	out, last, p := readSession(t, br)
	if last != wire.Exit {
		t.Fatalf("session ended with frame %d %q, want an exit", last, p)
	}
	if out[wire.Stdout] != "24x80\non stderr\ntyped" || out[wire.Stderr] != "" {
		t.Errorf("streams %q, want the size, stderr and stdin all on stdout", out)
	}
	if len(b.attaches) != 1 || !b.attaches[0].Tty {
		t.Errorf("backend attach %+v, want one with a tty", b.attaches)
	}
}
