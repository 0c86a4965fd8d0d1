package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// LetsEncrypt is the default ACME directory: Let's Encrypt's production CA.
const LetsEncrypt = certmagic.LetsEncryptProductionCA

// ACMEConfig says how a node gets certificates from an ACME CA itself.
//
// Without a DNSProvider each <id>.<base> gets its own certificate on
// demand, at the first TLS handshake that names it, through TLS-ALPN-01 or
// HTTP-01, and only for ids in Table. With a DNSProvider the node gets one
// wildcard *.<base> through DNS-01 and serves every workload with it.
type ACMEConfig struct {
	// Email is the ACME account's contact, where the CA writes about
	// problems with its certificates. Passing it agrees to the CA's terms
	// of service. Required.
	Email string
	// CA is the ACME directory URL; empty means LetsEncrypt.
	CA string
	// CARoots, when set, replaces the system roots for verifying the CA's
	// own HTTPS: a private CA (step-ca, Pebble) has a private root.
	CARoots *x509.CertPool
	// StorageDir keeps the ACME account, private keys and certificates
	// (certmagic's FileStorage), so a restart reuses them instead of
	// asking the CA again. Required.
	StorageDir string
	// BaseDomain is the domain workloads are served under, as <id>.<base>.
	BaseDomain string
	// Table is the routing table: a name gets a certificate on demand only
	// if its id is routed here. Required without DNSProvider.
	Table *Table

	// DNSProvider, when set, switches to one wildcard certificate obtained
	// through DNS-01: it creates and deletes the _acme-challenge TXT
	// records. NewDNSProvider makes one of the built-in providers; tests
	// and programs embedding the proxy may pass their own.
	DNSProvider certmagic.DNSProvider
	// DNSResolvers are DNS servers ("host:port") asked for the zone that
	// holds _acme-challenge.<base>; empty means the system's resolvers.
	// Set it when the system's resolvers do not see the zone, as with
	// split-horizon DNS.
	DNSResolvers []string
	// DNSPropagationTimeout is how long to wait for the TXT record to show
	// at the zone's authoritative servers before the CA is told to look;
	// 0 means certmagic's 2 minutes, -1 skips the check.
	DNSPropagationTimeout time.Duration

	// DisableHTTP01 and DisableTLSALPN01 turn off a per-name challenge
	// type: HTTP-01 when port 80 is not reachable from the CA, TLS-ALPN-01
	// when something in front of the node ends TLS on port 443.
	DisableHTTP01, DisableTLSALPN01 bool
	// HTTPAddr and HTTPSAddr are the proxy's listen addresses. Challenges
	// are answered there, by HTTPChallengeHandler and GetCertificate;
	// certmagic sees the ports taken and opens no listener of its own.
	HTTPAddr, HTTPSAddr string

	// Log receives certmagic's messages; nil means slog.Default().
	Log *slog.Logger
}

// ACME is a CertSource whose certificates come from an ACME CA through
// certmagic, which also keeps them renewed. Put it after the file
// certificates in a CertSources list, so files win for names they cover.
type ACME struct {
	base     string // lower case, no dots at the ends
	table    *Table
	wildcard string // "*.<base>" with a DNS provider, else ""
	magic    *certmagic.Config
	issuer   *certmagic.ACMEIssuer
	cache    *certmagic.Cache
	log      *slog.Logger

	ctx      context.Context // ends certmagic's retries and renewals at Stop
	cancel   context.CancelFunc
	stopOnce sync.Once
}

// NewACME checks c and sets up certmagic. Nothing is asked of the CA
// until Start (the wildcard) or the first handshake (a per-name
// certificate).
func NewACME(c ACMEConfig) (*ACME, error) {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if !strings.Contains(c.Email, "@") {
		return nil, fmt.Errorf("ACME: email %q is not an email address; the CA needs a contact for the account", c.Email)
	}
	if c.StorageDir == "" {
		return nil, errors.New("ACME: no storage directory; certificates and the account key must be kept across restarts")
	}
	base := strings.ToLower(strings.Trim(c.BaseDomain, "."))
	if base == "" || base == "localhost" || strings.HasSuffix(base, ".localhost") {
		return nil, fmt.Errorf("ACME: base domain %q cannot get certificates from a CA; set the base domain to a domain whose DNS you control", c.BaseDomain)
	}
	if c.DNSProvider == nil && c.Table == nil {
		return nil, errors.New("ACME: per-name certificates need the routing table, to refuse names that are not workloads")
	}
	if c.DNSProvider == nil && c.DisableHTTP01 && c.DisableTLSALPN01 {
		return nil, errors.New("ACME: both HTTP-01 and TLS-ALPN-01 are disabled and no DNS provider is set; enable one challenge type or configure a DNS provider")
	}
	if c.CA == "" {
		c.CA = LetsEncrypt
	}
	if err := os.MkdirAll(c.StorageDir, 0o700); err != nil {
		return nil, fmt.Errorf("ACME: create storage directory: %w", err)
	}
	host, httpsPort, err := listenPort(c.HTTPSAddr, 443)
	if err != nil {
		return nil, fmt.Errorf("ACME: HTTPS address %q: %w", c.HTTPSAddr, err)
	}
	_, httpPort, err := listenPort(c.HTTPAddr, 80)
	if err != nil {
		return nil, fmt.Errorf("ACME: HTTP address %q: %w", c.HTTPAddr, err)
	}

	a := &ACME{base: base, table: c.Table, log: c.Log}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	zl := zapToSlog(c.Log.With("component", "acme"))
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		// One config serves every certificate this node manages.
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return a.magic, nil },
		Logger:           zl,
	})
	cfg := certmagic.Config{
		Storage: &certmagic.FileStorage{Path: c.StorageDir},
		Logger:  zl,
	}
	if c.DNSProvider != nil {
		a.wildcard = "*." + base
	} else {
		cfg.OnDemand = &certmagic.OnDemandConfig{DecisionFunc: a.decide}
	}
	a.magic = certmagic.New(a.cache, cfg)
	tmpl := certmagic.ACMEIssuer{
		CA:                      c.CA,
		Email:                   c.Email,
		Agreed:                  true,
		TrustedRoots:            c.CARoots,
		DisableHTTPChallenge:    c.DisableHTTP01,
		DisableTLSALPNChallenge: c.DisableTLSALPN01,
		ListenHost:              host,
		AltHTTPPort:             httpPort,
		AltTLSALPNPort:          httpsPort,
		Logger:                  zl,
	}
	if c.DNSProvider != nil {
		// With a DNS-01 solver certmagic uses no other challenge type.
		tmpl.DNS01Solver = &certmagic.DNS01Solver{DNSManager: certmagic.DNSManager{
			DNSProvider:        c.DNSProvider,
			Resolvers:          c.DNSResolvers,
			PropagationTimeout: c.DNSPropagationTimeout,
			Logger:             zl,
		}}
	}
	a.issuer = certmagic.NewACMEIssuer(a.magic, tmpl)
	a.magic.Issuers = []certmagic.Issuer{a.issuer}
	return a, nil
}

// listenPort splits a listen address; an empty one means def on every
// address.
func listenPort(addr string, def int) (host string, port int, err error) {
	if addr == "" {
		return "", def, nil
	}
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err = strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q: want a number from 1 to 65535, as the CA must know where to connect", p)
	}
	return host, port, nil
}

// Start begins obtaining the wildcard, when there is a DNS provider, in
// the background: certmagic loads it from storage or asks the CA, retries
// with backoff while it fails, and renews it before it expires. Without a
// DNS provider there is nothing to do before handshakes ask for names.
func (a *ACME) Start() error {
	if a.wildcard == "" {
		return nil
	}
	if err := a.magic.ManageAsync(a.ctx, []string{a.wildcard}); err != nil {
		return fmt.Errorf("ACME: manage %s: %w", a.wildcard, err)
	}
	return nil
}

// Stop ends renewals, retries and certmagic's maintenance goroutine.
// Certificates stay in storage for the next start.
func (a *ACME) Stop() {
	a.stopOnce.Do(func() {
		a.cancel()
		a.cache.Stop()
	})
}

// Wildcard returns "*.<base>" when certificates come through DNS-01, or
// "" when each name gets its own.
func (a *ACME) Wildcard() string { return a.wildcard }

// SolvesTLSALPN implements TLSALPNSolver: challenge handshakes of the CA
// come here even when a file certificate covers the name.
func (a *ACME) SolvesTLSALPN() {}

// GetCertificate implements CertSource. It serves certificates, and
// answers the CA's TLS-ALPN-01 challenges, for <id>.<base> only: other
// names, and ids that are not routed (without a wildcard), get nil, nil
// without certmagic looking anything up, so random SNI values cost one
// map lookup and never reach storage or the CA.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !a.serves(hello.ServerName) {
		return nil, nil
	}
	if isTLSALPNChallenge(hello) && a.wildcard != "" {
		return nil, nil // DNS-01 only: no challenge of ours is pending
	}
	return a.certmagicCert(hello)
}

// serves reports whether name is one this source has a certificate for,
// or may get one for: <id>.<base>, and with per-name certificates only
// for a routed id.
func (a *ACME) serves(name string) bool {
	id, ok := workloadIDUnder(a.base, name)
	if !ok {
		return false
	}
	if a.wildcard == "" {
		_, ok = a.table.Lookup(id)
	}
	return ok
}

// certmagicCert asks certmagic, which returns an empty certificate, not
// nil, along with its errors.
func (a *ACME) certmagicCert(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := a.magic.GetCertificate(hello)
	if err != nil {
		return nil, fmt.Errorf("ACME certificate for %q: %w", hello.ServerName, err)
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, nil
	}
	return cert, nil
}

// decide is certmagic's on-demand DecisionFunc, asked before any
// certificate is obtained or renewed for name: only <id>.<base> of a
// routed workload passes. Without it anyone could make the node order
// certificates for any name pointed at it and use up the CA's rate limits.
func (a *ACME) decide(_ context.Context, name string) error {
	id, ok := workloadIDUnder(a.base, name)
	if !ok {
		return fmt.Errorf("%q is not <id>.%s", name, a.base)
	}
	if _, ok := a.table.Lookup(id); !ok {
		return fmt.Errorf("no workload %q on this node", id)
	}
	return nil
}

// HTTPChallengeHandler answers the CA's HTTP-01 requests
// (/.well-known/acme-challenge/) and passes everything else to next, such
// as the redirect to HTTPS on port 80. Only hosts that could have a
// challenge pending reach certmagic, which looks for one in storage.
func (a *ACME) HTTPChallengeHandler(next http.Handler) http.Handler {
	solve := a.issuer.HTTPChallengeHandler(next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if a.wildcard == "" && certmagic.LooksLikeHTTPChallenge(r) && a.serves(host) {
			solve.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// workloadIDUnder extracts <id> from "<id>.<base>", one label only, as the
// proxy does: a certificate is never sought for a name the proxy would not
// route.
func workloadIDUnder(base, name string) (string, bool) {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	id, ok := strings.CutSuffix(name, "."+base)
	if !ok || id == "" || strings.ContainsAny(id, ".*") {
		return "", false
	}
	return id, true
}

// LoadCARoots reads PEM certificates to trust for the ACME CA's HTTPS,
// besides the system roots.
func LoadCARoots(path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read ACME CA root: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("ACME CA root %s holds no PEM certificate; pass the CA's root (or its TLS certificate) in PEM form", path)
	}
	return pool, nil
}
