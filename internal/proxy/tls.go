package proxy

import (
	"crypto/tls"
	"errors"
)

// acmeTLS1 is the ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737):
// the CA's validator offers it alone, with the name being validated as SNI.
const acmeTLS1 = "acme-tls/1"

// TLSALPNSolver is a CertSource that answers ACME TLS-ALPN-01 challenge
// handshakes. Such a handshake must get the challenge certificate, never a
// regular one, so CertSources sends it only to these sources, and
// TLSConfig offers the acme-tls/1 protocol only when one is present.
type TLSALPNSolver interface {
	CertSource
	// SolvesTLSALPN marks the source; it does nothing.
	SolvesTLSALPN()
}

// isTLSALPNChallenge tells a CA's TLS-ALPN-01 validation from a client.
func isTLSALPNChallenge(hello *tls.ClientHelloInfo) bool {
	return hello.ServerName != "" && len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acmeTLS1
}

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
	challenge := isTLSALPNChallenge(hello)
	for _, src := range s {
		if _, ok := src.(TLSALPNSolver); challenge && !ok {
			// A file certificate covering the name would fail the
			// validation; only an ACME source holds the answer.
			continue
		}
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

// SolvesTLSALPN lets a CertSources inside another be asked about a
// challenge; it passes the challenge on only to its own solvers.
func (s CertSources) SolvesTLSALPN() {}

// solvesTLSALPN reports whether certs can answer TLS-ALPN-01 challenges.
func solvesTLSALPN(certs CertSource) bool {
	if list, ok := certs.(CertSources); ok {
		for _, src := range list {
			if solvesTLSALPN(src) {
				return true
			}
		}
		return false
	}
	_, ok := certs.(TLSALPNSolver)
	return ok
}

// TLSConfig is the TLS setup of the public HTTPS port: certificates from
// certs, HTTP/2 or HTTP/1.1 by ALPN, and TLS 1.2 or newer. When certs can
// answer ACME TLS-ALPN-01 challenges, acme-tls/1 is offered last: a CA's
// validator asks for it alone, and Go ends a handshake whose ALPN has no
// protocol in common; browsers never ask for it.
func TLSConfig(certs CertSource) *tls.Config {
	protos := []string{"h2", "http/1.1"}
	if solvesTLSALPN(certs) {
		protos = append(protos, acmeTLS1)
	}
	return &tls.Config{
		GetCertificate: certs.GetCertificate,
		NextProtos:     protos,
		MinVersion:     tls.VersionTLS12,
	}
}
