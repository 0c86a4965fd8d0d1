package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/wire"
)

// StreamProtocol is the Upgrade token of exec and attach: after the 101
// answer the connection carries wire frames both ways.
const StreamProtocol = "hypercore-stream/1"

// handleExec runs a command in a workload: POST
// /v1/workloads/{id}/exec?cmd=sh&cmd=-c&cmd=...&tty=1&env=K=V&rows=24&cols=80
// with "Connection: Upgrade" and "Upgrade: hypercore-stream/1". The node
// that answers serves the stream whichever node hosts the workload: the
// Backend reaches that node, so no request is proxied here.
func (s *Server) handleExec(w http.ResponseWriter, r *http.Request, id spec.ID) {
	q := r.URL.Query()
	args, env := q["cmd"], q["env"]
	tty, err := spec.ParseBool("tty", q.Get("tty"))
	if err == nil {
		err = spec.ValidateExec(args, env)
	}
	user, workdir := q.Get("user"), q.Get("workdir")
	if err == nil {
		err = spec.ValidateExecAs(user, workdir)
	}
	if err != nil {
		s.fail(w, err)
		return
	}
	if _, err := s.b.Get(id); err != nil {
		s.fail(w, err)
		return
	}
	s.upgrade(w, r, tty, func(ctx context.Context, stdio driver.IO) (int, error) {
		return s.b.Exec(ctx, id, driver.ExecConfig{Args: args, Env: env, User: user, WorkDir: workdir, IO: stdio})
	})
}

// handleAttach connects to a workload's main process, like exec without a
// new process.
func (s *Server) handleAttach(w http.ResponseWriter, r *http.Request, id spec.ID) {
	wl, err := s.b.Get(id)
	if err != nil {
		s.fail(w, err)
		return
	}
	s.upgrade(w, r, wl.Spec.Tty, func(ctx context.Context, stdio driver.IO) (int, error) {
		return 0, s.b.Attach(ctx, id, stdio)
	})
}

// upgrade switches the connection to wire frames and runs fn with its IO.
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, tty bool, fn func(context.Context, driver.IO) (int, error)) {
	if r.Header.Get("Upgrade") != StreamProtocol {
		writeError(w, http.StatusUpgradeRequired, "this route needs 'Connection: Upgrade' and 'Upgrade: "+StreamProtocol+"'; use the hypercore CLI (hypercore exec / attach)", "")
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "cannot take over the connection: "+err.Error(), "")
		return
	}
	defer conn.Close()
	brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + StreamProtocol + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	fw := wire.NewWriter(conn)
	stdinR, stdinW := io.Pipe()
	resize := make(chan driver.TermSize, 4)
	stdio := driver.IO{Stdin: stdinR, Stdout: fw.Stream(wire.Stdout), Stderr: fw.Stream(wire.Stderr), Tty: tty, Resize: resize}
	if tty {
		stdio.Stderr = stdio.Stdout
	}
	go readClientFrames(brw.Reader, stdinW, resize, cancel)
	code, err := fn(ctx, stdio)
	if err != nil && !errors.Is(err, context.Canceled) {
		fw.WriteFrame(wire.Error, []byte(err.Error()))
		return
	}
	fw.WriteFrame(wire.Exit, wire.EncodeExit(code))
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// readClientFrames feeds stdin and resizes from the client until it hangs
// up, which cancels the session.
func readClientFrames(r *bufio.Reader, stdin *io.PipeWriter, resize chan driver.TermSize, cancel context.CancelFunc) {
	defer close(resize)
	defer stdin.Close()
	for {
		t, p, err := wire.ReadFrame(r)
		if err != nil {
			cancel()
			return
		}
		switch t {
		case wire.Stdin:
			if _, err := stdin.Write(p); err != nil {
				// The process stopped reading; keep serving resizes.
				continue
			}
		case wire.CloseStdin:
			stdin.Close()
		case wire.Resize:
			if rows, cols, err := wire.DecodeResize(p); err == nil {
				select {
				case resize <- driver.TermSize{Rows: rows, Cols: cols}:
				default: // a slow consumer only needs the latest size
				}
			}
		}
	}
}
