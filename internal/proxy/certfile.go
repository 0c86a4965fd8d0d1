package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CertFile is a CertSource that serves a certificate and key from PEM files
// and re-reads them when they change, so a renewed certificate (certbot,
// cert-manager, a cron job) is served without a restart.
type CertFile struct {
	certPath, keyPath string
	// CheckEvery is how often a handshake may look at the files; between
	// looks it uses the cached certificate. 0 looks on every handshake.
	// Change it only before the CertFile serves.
	CheckEvery time.Duration
	log        *slog.Logger

	cur       atomic.Pointer[fileCert]
	lastCheck atomic.Int64 // unix nanoseconds

	mu   sync.Mutex // one look at the files at a time
	seen fileStamp  // what the files looked like when last tried, good or bad
}

// fileCert is a loaded certificate and the names it covers.
type fileCert struct {
	cert  *tls.Certificate
	names []string // lower case DNS names, wildcards as "*.example.com"
}

// fileStamp tells whether the files changed: size and modification time,
// as make does. A missing file has size -1.
type fileStamp struct {
	certMod, certSize, keyMod, keySize int64
}

// NewCertFile loads certPath and keyPath, failing if they do not hold a
// matching certificate and key. Later broken files are logged and ignored.
func NewCertFile(certPath, keyPath string, log *slog.Logger) (*CertFile, error) {
	if log == nil {
		log = slog.Default()
	}
	c := &CertFile{certPath: certPath, keyPath: keyPath, CheckEvery: 2 * time.Second, log: log}
	// Stamp before reading: a change in between is then seen next time.
	c.seen = c.stamp()
	fc, err := loadFileCert(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	c.cur.Store(fc)
	c.lastCheck.Store(time.Now().UnixNano())
	if left := time.Until(fc.cert.Leaf.NotAfter); left < 0 {
		log.Warn("TLS certificate has expired; clients will refuse it", "cert", certPath, "not_after", fc.cert.Leaf.NotAfter)
	}
	return c, nil
}

// GetCertificate returns the certificate if it covers hello's server name,
// or if the client sent none. For another name it returns nil, nil, so a
// CertSources list asks the next source (such as ACME).
func (c *CertFile) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.maybeReload()
	fc := c.cur.Load()
	if hello.ServerName != "" && !fc.covers(hello.ServerName) {
		return nil, nil
	}
	return fc.cert, nil
}

// Leaf returns the certificate being served now.
func (c *CertFile) Leaf() *x509.Certificate { return c.cur.Load().cert.Leaf }

// maybeReload re-reads the files if they changed. It costs an atomic load
// on most handshakes and two stat calls at most every CheckEvery; a
// handshake that finds another already looking does not wait.
func (c *CertFile) maybeReload() {
	now := time.Now().UnixNano()
	if now-c.lastCheck.Load() < int64(c.CheckEvery) || !c.mu.TryLock() {
		return
	}
	defer c.mu.Unlock()
	c.lastCheck.Store(now)
	st := c.stamp()
	if st == c.seen {
		return
	}
	c.seen = st // a broken change is logged once, and retried only when the files change again
	fc, err := loadFileCert(c.certPath, c.keyPath)
	if err != nil {
		c.log.Error("TLS certificate files changed but do not load; still serving the previous certificate",
			"cert", c.certPath, "key", c.keyPath, "err", err, "serving_not_after", c.cur.Load().cert.Leaf.NotAfter)
		return
	}
	c.cur.Store(fc)
	c.log.Info("TLS certificate reloaded", "cert", c.certPath, "names", fc.names, "not_after", fc.cert.Leaf.NotAfter)
}

func (c *CertFile) stamp() fileStamp {
	var st fileStamp
	st.certMod, st.certSize = statFile(c.certPath)
	st.keyMod, st.keySize = statFile(c.keyPath)
	return st
}

func statFile(path string) (mod, size int64) {
	fi, err := os.Stat(path) // follows symlinks, as certbot's live/ links need
	if err != nil {
		return 0, -1
	}
	return fi.ModTime().UnixNano(), fi.Size()
}

func loadFileCert(certPath, keyPath string) (*fileCert, error) {
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", certPath, keyPath, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse TLS certificate %s: %w", certPath, err)
		}
	}
	fc := &fileCert{cert: &cert}
	for _, n := range cert.Leaf.DNSNames {
		fc.names = append(fc.names, strings.ToLower(strings.TrimSuffix(n, ".")))
	}
	return fc, nil
}

// covers reports whether the certificate is valid for name: an exact DNS
// name, or a wildcard standing for exactly one label, as RFC 6125 says.
func (fc *fileCert) covers(name string) bool {
	name = strings.TrimSuffix(name, ".")
	for _, n := range fc.names {
		if rest, ok := strings.CutPrefix(n, "*."); ok {
			dot := strings.IndexByte(name, '.')
			if dot > 0 && strings.EqualFold(name[dot+1:], rest) {
				return true
			}
		} else if strings.EqualFold(name, n) {
			return true
		}
	}
	return false
}
