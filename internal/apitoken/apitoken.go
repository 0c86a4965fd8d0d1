// Package apitoken is the API's scoped tokens: their format, scopes and
// the record the cluster state keeps of each. A token is
// "hct_<id>_<secret>": the id picks the record, and only the SHA-256 of
// the 256-bit secret is stored, compared in constant time. The secret is
// high-entropy, so a plain hash is enough: there is nothing to guess.
package apitoken

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ErrNotFound means no token has the id given.
var ErrNotFound = errors.New("no such API token")

// Scope is what a token may do. Each scope includes the ones below it.
type Scope string

// The scopes, from least to most.
const (
	// ScopeRead lists and inspects workloads and nodes and reads logs.
	ScopeRead Scope = "read"
	// ScopeDeploy also spawns, stops, removes, execs, attaches and pulls.
	ScopeDeploy Scope = "deploy"
	// ScopeAdmin also manages tokens and prunes images; the node's
	// api-token file is an admin token.
	ScopeAdmin Scope = "admin"
)

// ParseScope checks s names a scope.
func ParseScope(s string) (Scope, error) {
	switch Scope(s) {
	case ScopeRead, ScopeDeploy, ScopeAdmin:
		return Scope(s), nil
	}
	return "", fmt.Errorf("scope %q is not one of admin, deploy, read", s)
}

// Allows reports whether a token of scope s may make a call that needs
// need.
func (s Scope) Allows(need Scope) bool { return s.rank() >= need.rank() }

func (s Scope) rank() int {
	switch s {
	case ScopeRead:
		return 1
	case ScopeDeploy:
		return 2
	case ScopeAdmin:
		return 3
	}
	return 0
}

// Token is the record the cluster state keeps of a token: never the
// secret, only its hash.
type Token struct {
	// ID is public: it names the token in list and revoke.
	ID string `json:"id"`
	// Name is the creator's label for it.
	Name  string `json:"name,omitempty"`
	Scope Scope  `json:"scope"`
	// Hash is the hex SHA-256 of the secret part.
	Hash      string    `json:"hash"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when it stops working; zero for never.
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// Expired reports whether t no longer works at now.
func (t Token) Expired(now time.Time) bool {
	return !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt)
}

// Limits on what a token record may hold.
const (
	// MaxNameBytes bounds a token's name.
	MaxNameBytes = 64
	// MaxTokens bounds how many tokens the cluster keeps.
	MaxTokens = 1024
)

const prefix = "hct_"

var (
	idPattern   = regexp.MustCompile(`^[0-9a-f]{16}$`)
	hashPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
	namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._@:/-]*$`)
)

// New makes a token of scope, named name, that expires after ttl (0:
// never), and returns its record and the secret string to hand out once.
func New(scope Scope, name string, ttl time.Duration, now time.Time) (Token, string, error) {
	if _, err := ParseScope(string(scope)); err != nil {
		return Token{}, "", err
	}
	if err := CheckName(name); err != nil {
		return Token{}, "", err
	}
	if ttl < 0 {
		return Token{}, "", fmt.Errorf("ttl %s is negative", ttl)
	}
	var idb [8]byte
	var secret [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return Token{}, "", err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return Token{}, "", err
	}
	s := base64.RawURLEncoding.EncodeToString(secret[:])
	t := Token{ID: hex.EncodeToString(idb[:]), Name: name, Scope: scope, Hash: hashOf(s), CreatedAt: now.UTC()}
	if ttl > 0 {
		t.ExpiresAt = now.Add(ttl).UTC()
	}
	return t, prefix + t.ID + "_" + s, nil
}

// CheckName checks a token's name: empty, or up to MaxNameBytes of
// letters, digits and . _ @ : / - and spaces.
func CheckName(name string) error {
	if name == "" {
		return nil
	}
	if len(name) > MaxNameBytes || !namePattern.MatchString(name) {
		return fmt.Errorf("name %q: use up to %d letters, digits, spaces and . _ @ : / -", name, MaxNameBytes)
	}
	return nil
}

// Check refuses a record that New could not have made, for a record that
// came over the network.
func (t Token) Check() error {
	if !idPattern.MatchString(t.ID) {
		return fmt.Errorf("token id %q is not 16 hex digits", t.ID)
	}
	if !hashPattern.MatchString(t.Hash) {
		return fmt.Errorf("token %s: hash is not 64 hex digits", t.ID)
	}
	if _, err := ParseScope(string(t.Scope)); err != nil {
		return fmt.Errorf("token %s: %w", t.ID, err)
	}
	return CheckName(t.Name)
}

// CheckID checks that id could name a token.
func CheckID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%q is not a token id (16 hex digits, as 'hypercore token list' shows)", id)
	}
	return nil
}

// Split takes a presented token apart into its id and secret; ok is false
// for anything not shaped like a token New makes.
func Split(presented string) (id, secret string, ok bool) {
	rest, found := strings.CutPrefix(presented, prefix)
	if !found {
		return "", "", false
	}
	id, secret, found = strings.Cut(rest, "_")
	if !found || !idPattern.MatchString(id) || len(secret) != 43 {
		return "", "", false
	}
	return id, secret, true
}

// Matches reports, in time independent of where they differ, whether
// secret is t's.
func (t Token) Matches(secret string) bool {
	return subtle.ConstantTimeCompare([]byte(hashOf(secret)), []byte(t.Hash)) == 1
}

func hashOf(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// MaxTTL is the longest life a token may be given.
const MaxTTL = 10 * 365 * 24 * time.Hour

// ParseTTL reads a token's lifetime: a Go duration ("12h", "90m") or a
// number of days ("30d"); "" or "0" is forever.
func ParseTTL(s string) (time.Duration, error) {
	if s == "" || s == "0" {
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("ttl %q: want a duration such as 12h or a number of days such as 30d", s)
		}
		d = time.Duration(n) * 24 * time.Hour
		if n > uint64(MaxTTL/(24*time.Hour)) {
			d = MaxTTL + 1
		}
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("ttl %q: want a duration such as 12h or a number of days such as 30d", s)
		}
	}
	if d <= 0 || d > MaxTTL {
		return 0, fmt.Errorf("ttl %q: want more than 0 and at most 10 years (3650d)", s)
	}
	return d, nil
}
