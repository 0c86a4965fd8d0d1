package proxy

import (
	"crypto/tls"
	"errors"
)

// CertSource supplies certificates for TLS handshakes, as
// tls.Config.GetCertificate does. It returns nil, nil when it has no
// certificate for hello.ServerName, so the next source is asked: files for
// the cluster's wildcard, ACME (certmagic) for names it manages, and so on.
type CertSource interface {
	GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
}

// CertSources asks each source in order and serves the first certificate
// found.
type CertSources []CertSource

// errNoCert ends a handshake for a name no source covers; the client sees
// an alert instead of a certificate for some other name.
var errNoCert = errors.New("no certificate for this server name")

// GetCertificate implements CertSource. A source's error ends the search
// only if no later source has a certificate, so a failing ACME issuance
// does not hide a file certificate that covers the name.
func (s CertSources) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	var firstErr error
	for _, src := range s {
		cert, err := src.GetCertificate(hello)
		if cert != nil {
			return cert, nil
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, errNoCert
}

// TLSConfig is the TLS setup of the public HTTPS port: certificates from
// certs, HTTP/2 or HTTP/1.1 by ALPN, and TLS 1.2 or newer.
func TLSConfig(certs CertSource) *tls.Config {
	return &tls.Config{
		GetCertificate: certs.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
	}
}
