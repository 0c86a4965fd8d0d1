package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/hypercore-dev/hypercore/internal/store"
)

// tunnelALPN marks a connection to a node's RPC port that carries one TCP
// stream to a workload hosted there. A workload's address is private to
// its node's bridge, so another node's proxy reaches it through the host
// node: its local proxy listener (tunnels.addr) forwards each connection
// over mutual TLS, and the host node connects it to the workload. Raw
// bytes, not HTTP, cross the tunnel, so HTTP, WebSocket and raw TCP public
// ports all work through it unchanged.
const tunnelALPN = "hypercore-tunnel/1"

// tunnels are the loopback listeners this node's proxy uses as backends
// for workloads on other nodes, one per (node, workload address).
type tunnels struct {
	peers *peers
	log   *slog.Logger
	mu    sync.Mutex
	by    map[tunnelKey]*tunnel
}

type tunnelKey struct{ node, rpcAddr, target string }

type tunnel struct {
	ln net.Listener
}

func newTunnels(p *peers, log *slog.Logger) *tunnels {
	return &tunnels{peers: p, log: log, by: map[tunnelKey]*tunnel{}}
}

// addr returns the loopback address that reaches target on node through a
// tunnel, opening the listener on first use.
func (t *tunnels) addr(node, rpcAddr, target string) (string, error) {
	k := tunnelKey{node, rpcAddr, target}
	t.mu.Lock()
	defer t.mu.Unlock()
	if tn, ok := t.by[k]; ok {
		return tn.ln.Addr().String(), nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	tn := &tunnel{ln: ln}
	t.by[k] = tn
	go t.serve(k, tn)
	return ln.Addr().String(), nil
}

// retain closes every tunnel not in keep.
func (t *tunnels) retain(keep map[tunnelKey]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, tn := range t.by {
		if !keep[k] {
			tn.ln.Close()
			delete(t.by, k)
		}
	}
}

func (t *tunnels) close() { t.retain(nil) }

func (t *tunnels) serve(k tunnelKey, tn *tunnel) {
	for {
		c, err := tn.ln.Accept()
		if err != nil {
			return // closed by retain
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			up, err := t.peers.dialTunnel(ctx, k.node, k.rpcAddr, k.target)
			cancel()
			if err != nil {
				t.log.Warn("tunnel to peer failed", "node", k.node, "target", k.target, "err", err)
				c.Close()
				return
			}
			pipe(c, up)
		}()
	}
}

// serveTunnel is the host side: it reads the target line, checks that the
// target is a workload port on this node (so a tunnel cannot be used to
// reach the host or anything else), and joins the two streams.
func serveTunnel(c *tls.Conn, local func() ([]store.Workload, error), log *slog.Logger) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReaderSize(io.LimitReader(c, 64), 64).ReadString('\n')
	if err != nil {
		return
	}
	c.SetReadDeadline(time.Time{})
	target := line[:len(line)-1]
	if !isWorkloadTarget(target, local) {
		log.Warn("tunnel refused: not a workload port on this node", "target", target)
		return
	}
	back, err := net.DialTimeout("tcp", target, 3*time.Second)
	if err != nil {
		return
	}
	pipe(c, back)
}

func isWorkloadTarget(target string, local func() ([]store.Workload, error)) bool {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return false
	}
	list, err := local()
	if err != nil {
		return false
	}
	for _, w := range list {
		if w.IP != ap.Addr().String() || w.State != store.StateRunning {
			continue
		}
		for _, p := range w.Spec.Ports {
			if p.Target == ap.Port() {
				return true
			}
		}
	}
	return false
}

// pipe copies both ways until each side has finished, passing on a
// half-close so request-then-EOF protocols work.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	wg.Add(2)
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

func joinHostPort(ip string, port uint16) string {
	return net.JoinHostPort(ip, strconv.Itoa(int(port)))
}
