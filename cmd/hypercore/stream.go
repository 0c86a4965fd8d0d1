package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/hypercore-dev/hypercore/internal/server"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/wire"
)

func newExecCmd(api *apiFlags) *cobra.Command {
	var interactive, tty bool
	var env []string
	var user, workdir string
	cmd := &cobra.Command{
		Use:   "exec [-it] [-u USER] [-w DIR] [-e KEY=VALUE] ID [--] CMD [ARGS...]",
		Short: "Run a command inside a running workload",
		Example: `  hypercore exec -it ID sh
  hypercore exec ID -- wget -q -O- http://127.0.0.1:8080/`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, argv := args[0], dropDashes(args[1:])
			if err := spec.ValidateID(id); err != nil {
				return err
			}
			if err := spec.ValidateExec(argv, env); err != nil {
				return err
			}
			if err := spec.ValidateExecAs(user, workdir); err != nil {
				return err
			}
			q := url.Values{"cmd": argv, "env": env}
			if user != "" {
				q.Set("user", user)
			}
			if workdir != "" {
				q.Set("workdir", workdir)
			}
			if tty {
				q.Set("tty", "1")
			}
			return runStream(api, "/v1/workloads/"+id+"/exec?"+q.Encode(), interactive, tty, false)
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.BoolVarP(&interactive, "interactive", "i", false, "send stdin to the command")
	f.BoolVarP(&tty, "tty", "t", false, "give the command a terminal")
	f.StringArrayVarP(&env, "env", "e", nil, "KEY=VALUE for the command, repeatable")
	f.StringVarP(&user, "user", "u", "", "run as this user: a name, uid or uid:gid (microVMs: numeric only)")
	f.StringVarP(&workdir, "workdir", "w", "", "run in this directory (absolute) instead of the workload's")
	return cmd
}

// dropDashes removes the "--" that separates a command from our flags;
// flag parsing stops at the first argument, so it reaches us verbatim.
func dropDashes(args []string) []string {
	if len(args) > 0 && args[0] == "--" {
		return args[1:]
	}
	return args
}

func newAttachCmd(api *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "attach ID",
		Short: "Connect your terminal to a workload's main process",
		Long: `Attach connects your terminal to a workload's main process: what you type
goes to its stdin and you see its output. With a terminal, Ctrl-C goes to the
workload; type Ctrl-P Ctrl-Q to detach and leave it running.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := spec.ValidateID(args[0]); err != nil {
				return err
			}
			tty := term.IsTerminal(int(os.Stdin.Fd()))
			return runStream(api, "/v1/workloads/"+args[0]+"/attach", true, tty, tty)
		},
	}
}

// detachKeys end an attach on a terminal, as in docker: Ctrl-P Ctrl-Q.
var detachKeys = []byte{0x10, 0x11}

// runStream opens an upgraded exec/attach connection and pumps the
// terminal through it until the remote side sends its exit code, or, when
// detachable, until the user types detachKeys.
func runStream(api *apiFlags, path string, interactive, tty, detachable bool) error {
	c, err := api.client()
	if err != nil {
		return err
	}
	conn, br, err := dialStream(c, path)
	if err != nil {
		return err
	}
	defer conn.Close()
	fw := wire.NewWriter(conn)

	if tty && term.IsTerminal(int(os.Stdin.Fd())) {
		old, err := term.MakeRaw(int(os.Stdin.Fd()))
		if err != nil {
			return fmt.Errorf("cannot put the terminal in raw mode: %w", err)
		}
		defer term.Restore(int(os.Stdin.Fd()), old)
		sendSize := func() {
			if cols, rows, err := term.GetSize(int(os.Stdin.Fd())); err == nil {
				fw.WriteFrame(wire.Resize, wire.EncodeResize(uint16(rows), uint16(cols)))
			}
		}
		sendSize()
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				sendSize()
			}
		}()
	}
	detached := make(chan struct{})
	if interactive {
		var in io.Reader = os.Stdin
		if detachable {
			in = &detachReader{r: os.Stdin, keys: detachKeys}
		}
		go func() {
			_, err := io.Copy(fw.Stream(wire.Stdin), in)
			if errors.Is(err, errDetach) {
				close(detached)
				conn.Close()
				return
			}
			fw.WriteFrame(wire.CloseStdin, nil)
		}()
	} else {
		fw.WriteFrame(wire.CloseStdin, nil)
	}
	for {
		t, p, err := wire.ReadFrame(br)
		if err != nil {
			select {
			case <-detached:
				fmt.Fprint(os.Stderr, "\r\ndetached; the workload keeps running\r\n")
				return nil
			default:
			}
			return fmt.Errorf("connection to the node ended without an exit status: %w", err)
		}
		switch t {
		case wire.Stdout:
			os.Stdout.Write(p)
		case wire.Stderr:
			os.Stderr.Write(p)
		case wire.Error:
			return fmt.Errorf("%s", p)
		case wire.Exit:
			code, err := wire.DecodeExit(p)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitStatus(code)
			}
			return nil
		}
	}
}

var errDetach = errors.New("detach keys typed")

// detachReader passes input through until it sees keys, then fails with
// errDetach. Bytes that could start keys are held back until it is clear
// they do not, so the workload never sees half of the sequence.
type detachReader struct {
	r       io.Reader
	keys    []byte
	matched int
	out     []byte
}

func (d *detachReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		buf := make([]byte, len(p))
		n, err := d.r.Read(buf)
		for _, b := range buf[:n] {
			if b == d.keys[d.matched] {
				if d.matched++; d.matched == len(d.keys) {
					return copy(p, d.out), errDetach
				}
				continue
			}
			d.out = append(d.out, d.keys[:d.matched]...)
			d.matched = 0
			if b == d.keys[0] {
				d.matched = 1
				continue
			}
			d.out = append(d.out, b)
		}
		if err != nil {
			d.out = append(d.out, d.keys[:d.matched]...)
			d.matched = 0
			if len(d.out) == 0 {
				return 0, err
			}
			break
		}
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

// dialStream sends the upgrade request and returns the raw connection once
// the node answers 101.
func dialStream(c *client, path string) (net.Conn, *bufio.Reader, error) {
	u, err := url.Parse(c.base + path)
	if err != nil {
		return nil, nil, err
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		return nil, nil, fmt.Errorf("no hypercore node answers at %s (%v); start one with 'hypercore cluster' or pass --addr", u.Host, err)
	}
	if u.Scheme == "https" {
		cfg := &tls.Config{}
		if c.tls != nil {
			cfg = c.tls.Clone()
		}
		cfg.ServerName = u.Hostname()
		cfg.NextProtos = []string{"http/1.1"} // the upgrade is HTTP/1.1's
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, nil, fmt.Errorf("TLS with %s: %w (pass the cluster CA with --ca)", u.Host, err)
		}
		conn = tc
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, u.String(), nil)
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", server.StreamProtocol)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("bad answer from the node: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, nil, fmt.Errorf("%s: %s", resp.Status, apiMessage(body))
	}
	return conn, br, nil
}

// apiMessage pulls "error" out of an API error body, or returns it as is.
func apiMessage(body []byte) string {
	s := strings.TrimSpace(string(body))
	if i := strings.Index(s, `"error": `); i >= 0 {
		if v, err := strconv.QuotedPrefix(s[i+len(`"error": `):]); err == nil {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
		}
	}
	return s
}
