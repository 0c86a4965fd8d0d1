package membership

import (
	"errors"
	"fmt"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// udpPacketBufSize is the largest gossip packet read, as memberlist's own
// transport reads.
const udpPacketBufSize = 65536

// sharedTransport is memberlist's transport on sockets the caller made:
// gossip packets on a UDP socket and gossip streams from a listener, which
// in a node is one side of the port it shares with node RPC and raft.
type sharedTransport struct {
	udp      *net.UDPConn
	streams  net.Listener
	bindIP   net.IP
	bindPort int
	log      *log.Logger

	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	shutdown atomic.Bool
	wg       sync.WaitGroup
}

var _ memberlist.Transport = (*sharedTransport)(nil)

func newSharedTransport(udp *net.UDPConn, streams net.Listener, logger *log.Logger) *sharedTransport {
	local := udp.LocalAddr().(*net.UDPAddr)
	t := &sharedTransport{
		udp: udp, streams: streams, bindIP: local.IP, bindPort: local.Port, log: logger,
		packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t
}

// FinalAdvertiseAddr implements memberlist.Transport: the advertise
// address if given, else the bound one, which must then be specific.
func (t *sharedTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("advertise address %q is not an IP", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	if t.bindIP.IsUnspecified() {
		return nil, 0, errors.New("bound to all addresses: give an advertise address")
	}
	return t.bindIP, t.bindPort, nil
}

// WriteTo implements memberlist.Transport.
func (t *sharedTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, a)
	return time.Now(), err
}

// PacketCh implements memberlist.Transport.
func (t *sharedTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout implements memberlist.Transport.
func (t *sharedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", addr)
}

// StreamCh implements memberlist.Transport.
func (t *sharedTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown implements memberlist.Transport. It closes the UDP socket and
// the stream listener, which are gossip's alone.
func (t *sharedTransport) Shutdown() error {
	t.shutdown.Store(true)
	err := errors.Join(t.udp.Close(), t.streams.Close())
	t.wg.Wait()
	return err
}

func (t *sharedTransport) readPackets() {
	defer t.wg.Done()
	for {
		buf := make([]byte, udpPacketBufSize)
		n, from, err := t.udp.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			if t.shutdown.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Printf("[ERR] memberlist: reading a UDP packet: %v", err)
			continue
		}
		if n < 1 {
			continue
		}
		t.packetCh <- &memberlist.Packet{Buf: buf[:n], From: from, Timestamp: now}
	}
}

func (t *sharedTransport) acceptStreams() {
	defer t.wg.Done()
	for {
		c, err := t.streams.Accept()
		if err != nil {
			if t.shutdown.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			t.log.Printf("[ERR] memberlist: accepting a stream: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		t.streamCh <- c
	}
}
