package proxy

// Pebble (Let's Encrypt's test CA), pebble-challtestsrv and a small DNS
// server, all on loopback, for the ACME tests. Nothing here leaves the
// machine: Pebble validates against 127.0.0.1, and every DNS answer comes
// from a server the test runs.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/libdns/libdns"
	"github.com/miekg/dns"
)

// loopbackPort returns a free port on 127.0.0.1, for the tools that take
// an address on their command line.
func loopbackPort(t *testing.T) int { return int(freePort(t)) }

// pebbleCA is a running Pebble.
type pebbleCA struct {
	DirURL  string         // ACME directory
	TLSPool *x509.CertPool // trusts Pebble's HTTPS
	mgmt    string         // management API base URL
	log     *testutil.LockedBuffer
}

// startPebble runs Pebble on loopback. It validates HTTP-01 on httpPort
// and TLS-ALPN-01 on tlsPort of whatever dnsServer resolves names to.
func startPebble(t *testing.T, httpPort, tlsPort int, dnsServer string) *pebbleCA {
	t.Helper()
	bin := testutil.PebbleTool(t, "pebble")
	dir := t.TempDir()
	certPath, keyPath, pool := testutil.SelfSignedCert(t, dir, "localhost", "127.0.0.1")
	listen := fmt.Sprintf("127.0.0.1:%d", loopbackPort(t))
	mgmt := fmt.Sprintf("127.0.0.1:%d", loopbackPort(t))
	cfg := testutil.WritePebbleConfig(t, dir, testutil.PebbleConfig{
		Listen: listen, Management: mgmt, Certificate: certPath, Key: keyPath,
		HTTPPort: httpPort, TLSPort: tlsPort,
	})
	p := &pebbleCA{DirURL: "https://" + listen + "/dir", TLSPool: pool, mgmt: "https://" + mgmt, log: &testutil.LockedBuffer{}}
	cmd := exec.Command(bin, "-config", cfg, "-dnsserver", dnsServer)
	cmd.Env = testutil.PebbleEnv()
	testutil.StartTool(t, cmd, p.log)
	waitUp(t, "pebble", p.log, func() bool {
		resp, err := p.client().Get(p.DirURL)
		if err == nil {
			resp.Body.Close()
		}
		return err == nil && resp.StatusCode == 200
	})
	return p
}

// waitUp polls up for at most 10 seconds.
func waitUp(t *testing.T, what string, log fmt.Stringer, up func() bool) {
	t.Helper()
	for range 200 {
		if up() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not come up in 10s; its output:\n%s", what, log)
}

func (p *pebbleCA) client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy:           nil,
		TLSClientConfig: &tls.Config{RootCAs: p.TLSPool},
	}}
}

// Roots returns the root that Pebble's certificates chain to, from the
// management API. Pebble makes a new one at every start.
func (p *pebbleCA) Roots(t *testing.T) *x509.CertPool {
	t.Helper()
	return testutil.PebbleRoots(t, p.client(), p.mgmt)
}

// Orders counts the orders Pebble has taken.
func (p *pebbleCA) Orders() int { return strings.Count(p.log.String(), "Added order") }

// challtestsrv is a running pebble-challtestsrv: a DNS server whose
// records are set through an HTTP API.
type challtestsrv struct {
	DNS  string // host:port
	mgmt string // http://host:port
	log  *testutil.LockedBuffer
}

func startChalltestsrv(t *testing.T) *challtestsrv {
	t.Helper()
	bin := testutil.PebbleTool(t, "pebble-challtestsrv")
	c := &challtestsrv{
		DNS:  fmt.Sprintf("127.0.0.1:%d", loopbackPort(t)),
		mgmt: fmt.Sprintf("http://127.0.0.1:%d", loopbackPort(t)),
		log:  &testutil.LockedBuffer{},
	}
	cmd := exec.Command(bin, testutil.ChalltestsrvArgs(c.DNS, strings.TrimPrefix(c.mgmt, "http://"))...)
	testutil.StartTool(t, cmd, c.log)
	waitUp(t, "pebble-challtestsrv", c.log, func() bool {
		conn, err := net.Dial("tcp", strings.TrimPrefix(c.mgmt, "http://"))
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return c
}

// challtestsrvProvider is a libdns provider that keeps TXT records in
// pebble-challtestsrv, standing in for a real DNS provider's API.
type challtestsrvProvider struct {
	srv *challtestsrv
	mu  sync.Mutex
	set []string // hosts that got a record, for the test to check
}

func (p *challtestsrvProvider) post(ctx context.Context, path string, body map[string]string) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", p.srv.mgmt+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("challtestsrv %s: %s", path, resp.Status)
	}
	return nil
}

func (p *challtestsrvProvider) AppendRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	for _, r := range recs {
		rr := r.RR()
		host := libdns.AbsoluteName(rr.Name, zone)
		if err := p.post(ctx, "/set-txt", map[string]string{"host": host, "value": rr.Data}); err != nil {
			return nil, err
		}
		p.mu.Lock()
		p.set = append(p.set, host)
		p.mu.Unlock()
	}
	return recs, nil
}

func (p *challtestsrvProvider) DeleteRecords(ctx context.Context, zone string, recs []libdns.Record) ([]libdns.Record, error) {
	for _, r := range recs {
		if err := p.post(ctx, "/clear-txt", map[string]string{"host": libdns.AbsoluteName(r.RR().Name, zone)}); err != nil {
			return nil, err
		}
	}
	return recs, nil
}

// testDNS is an authoritative server for one zone, on UDP and TCP: it
// answers SOA at the apex (certmagic looks for the zone before it adds a
// record), A with 127.0.0.1 for every name (so Pebble validates against
// the test's servers), TXT from what it was sent, and RFC 2136 updates
// signed with its TSIG key, as BIND configured for ACME would.
type testDNS struct {
	Addr    string
	zone    string
	keyName string
	secret  string

	mu      sync.Mutex
	txt     map[string][]string
	updates []string // "ok", or why an update was refused
}

func startTestDNS(t *testing.T, zone, keyName, secret string) *testDNS {
	t.Helper()
	d := &testDNS{zone: dns.Fqdn(zone), keyName: dns.Fqdn(keyName), secret: secret, txt: map[string][]string{}}
	tsig := map[string]string{d.keyName: secret}
	var pc net.PacketConn
	var l net.Listener
	for range 20 { // the UDP port may be taken where the TCP one is free
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if pc, err = net.ListenPacket("udp", l.Addr().String()); err == nil {
			break
		}
		l.Close()
		l = nil
	}
	if l == nil {
		t.Fatal("no port free for both UDP and TCP")
	}
	d.Addr = l.Addr().String()
	// miekg/dns answers NOTIMP to updates unless told to take them.
	accept := func(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }
	for _, s := range []*dns.Server{
		{PacketConn: pc, Handler: d, TsigSecret: tsig, MsgAcceptFunc: accept},
		{Listener: l, Handler: d, TsigSecret: tsig, MsgAcceptFunc: accept},
	} {
		go s.ActivateAndServe()
		t.Cleanup(func() { s.Shutdown() })
	}
	return d
}

func (d *testDNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if r.Opcode == dns.OpcodeUpdate {
		d.update(w, r, m)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range r.Question {
		name := strings.ToLower(q.Name)
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: 1}
		switch {
		case q.Qtype == dns.TypeSOA && name == d.zone:
			hdr.Rrtype = dns.TypeSOA
			m.Answer = append(m.Answer, &dns.SOA{Hdr: hdr, Ns: "ns." + d.zone, Mbox: "hostmaster." + d.zone, Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 1})
		case q.Qtype == dns.TypeA:
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: net.IPv4(127, 0, 0, 1)})
		case q.Qtype == dns.TypeTXT:
			hdr.Rrtype = dns.TypeTXT
			for _, v := range d.txt[name] {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr, Txt: []string{v}})
			}
		}
	}
	w.WriteMsg(m)
}

// update applies an RFC 2136 update whose TSIG signature checks out.
func (d *testDNS) update(w dns.ResponseWriter, r *dns.Msg, m *dns.Msg) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ts := r.IsTsig()
	switch {
	case ts == nil:
		d.updates = append(d.updates, "unsigned")
		m.Rcode = dns.RcodeRefused
	case w.TsigStatus() != nil || strings.ToLower(ts.Hdr.Name) != d.keyName:
		d.updates = append(d.updates, fmt.Sprintf("bad signature: %v", w.TsigStatus()))
		m.Rcode = dns.RcodeNotAuth
	case len(r.Question) != 1 || strings.ToLower(r.Question[0].Name) != d.zone:
		d.updates = append(d.updates, "wrong zone")
		m.Rcode = dns.RcodeNotZone
	default:
		for _, rr := range r.Ns {
			name := strings.ToLower(rr.Header().Name)
			switch rr.Header().Class {
			case dns.ClassINET: // add
				if txt, ok := rr.(*dns.TXT); ok {
					d.txt[name] = append(d.txt[name], strings.Join(txt.Txt, ""))
				}
			case dns.ClassNONE: // delete one record
				if txt, ok := rr.(*dns.TXT); ok {
					v := strings.Join(txt.Txt, "")
					d.txt[name] = slicesDelete(d.txt[name], v)
				}
			case dns.ClassANY: // delete the set
				delete(d.txt, name)
			}
		}
		d.updates = append(d.updates, "ok")
	}
	if ts != nil {
		m.SetTsig(ts.Hdr.Name, ts.Algorithm, 300, time.Now().Unix())
	}
	w.WriteMsg(m)
}

func slicesDelete(s []string, v string) []string {
	out := s[:0]
	for _, x := range s {
		if x != v {
			out = append(out, x)
		}
	}
	return out
}

// Updates returns what became of each update received.
func (d *testDNS) Updates() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.updates...)
}
