package pki

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// TokenPrefix starts every join token of the format this package reads.
// The digit is the format version, so a token from a newer hypercore is
// told apart from a garbled one.
const TokenPrefix = "hcjoin1."

// ErrInvalidToken is wrapped by every error ParseJoinToken returns.
var ErrInvalidToken = errors.New("invalid join token")

// JoinToken is what a new node needs to join: where to ask, whom to trust,
// and the secret that proves it may. The secret is never sent; the node
// proves it knows it (see Join).
type JoinToken struct {
	// Addr is host:port of a join endpoint: the RPC listener of a node
	// that holds the cluster CA.
	Addr string
	// CAPin is the SHA-256 of the cluster CA's SubjectPublicKeyInfo. The
	// joining node trusts the server only if its chain ends in this key,
	// never the system roots.
	CAPin [32]byte
	// Secret is the cluster's join secret, JoinSecretSize bytes.
	Secret []byte
}

// The encoded payload is
//
//	len(Addr) (1 byte) | Addr | CAPin (32) | Secret (32) | checksum (4)
//
// with checksum the first 4 bytes of the SHA-256 of what precedes it, so a
// token mangled in copy and paste fails here with a clear message instead
// of at the server as a puzzling 403.
const checksumSize = 4

// Encode returns the token in its paste-able form: TokenPrefix followed by
// unpadded base64url, safe in shells, URLs and environment variables. t
// must be valid, as Authority.JoinToken and ParseJoinToken make it.
func (t JoinToken) Encode() string {
	b := make([]byte, 0, 1+len(t.Addr)+32+len(t.Secret)+checksumSize)
	b = append(b, byte(len(t.Addr)))
	b = append(b, t.Addr...)
	b = append(b, t.CAPin[:]...)
	b = append(b, t.Secret...)
	sum := sha256.Sum256(b)
	b = append(b, sum[:checksumSize]...)
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// String describes the token without its secret, so a token passed to a
// logger or %v does not leak. Use Encode for the real thing.
func (t JoinToken) String() string {
	return fmt.Sprintf("join token for %s (CA sha256:%s, secret redacted)", t.Addr, hex.EncodeToString(t.CAPin[:8]))
}

// GoString redacts the secret for %#v as String does for %v.
func (t JoinToken) GoString() string { return "pki.JoinToken{" + t.String() + "}" }

// ParseJoinToken decodes and checks a token as printed by Encode. Leading
// and trailing white space is ignored, since tokens are pasted and read
// from files.
func ParseJoinToken(s string) (JoinToken, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return JoinToken{}, fmt.Errorf("%w: it is empty; pass the contents of <data-dir>/join-token from a server node", ErrInvalidToken)
	}
	if !strings.HasPrefix(s, TokenPrefix) {
		if v, ok := strings.CutPrefix(s, "hcjoin"); ok {
			ver, _, _ := strings.Cut(v, ".")
			return JoinToken{}, fmt.Errorf("%w: format version %q is not one this hypercore reads (it reads %s…); join with a matching hypercore version", ErrInvalidToken, ver, TokenPrefix)
		}
		return JoinToken{}, fmt.Errorf("%w: it does not start with %q; pass the contents of <data-dir>/join-token from a server node", ErrInvalidToken, TokenPrefix)
	}
	b, err := base64.RawURLEncoding.DecodeString(s[len(TokenPrefix):])
	if err != nil {
		return JoinToken{}, fmt.Errorf("%w: it is garbled (%v); copy it again in full", ErrInvalidToken, err)
	}
	if len(b) < 1 || len(b) != 1+int(b[0])+32+JoinSecretSize+checksumSize {
		return JoinToken{}, fmt.Errorf("%w: it has the wrong length, likely cut short in copying; copy it again in full", ErrInvalidToken)
	}
	body, sum := b[:len(b)-checksumSize], b[len(b)-checksumSize:]
	want := sha256.Sum256(body)
	if string(sum) != string(want[:checksumSize]) {
		return JoinToken{}, fmt.Errorf("%w: its checksum does not match, so some characters changed in copying; copy it again", ErrInvalidToken)
	}
	n := int(body[0])
	t := JoinToken{Addr: string(body[1 : 1+n])}
	copy(t.CAPin[:], body[1+n:1+n+32])
	t.Secret = append([]byte(nil), body[1+n+32:]...)
	if err := t.validate(); err != nil {
		return JoinToken{}, err
	}
	return t, nil
}

// validate checks the fields Encode needs to round-trip and Join needs to
// dial.
func (t JoinToken) validate() error {
	if len(t.Addr) > 255 {
		return fmt.Errorf("%w: server address is longer than 255 bytes", ErrInvalidToken)
	}
	host, port, err := net.SplitHostPort(t.Addr)
	if err != nil || host == "" {
		return fmt.Errorf("%w: server address %q is not host:port", ErrInvalidToken, t.Addr)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return fmt.Errorf("%w: server address %q has no valid port", ErrInvalidToken, t.Addr)
	}
	if len(t.Secret) != JoinSecretSize {
		return fmt.Errorf("%w: secret is %d bytes, want %d", ErrInvalidToken, len(t.Secret), JoinSecretSize)
	}
	return nil
}
