package apitoken

import (
	"strings"
	"testing"
	"time"
)

func TestNewSplitMatches(t *testing.T) {
	now := time.Now()
	tok, s, err := New(ScopeDeploy, "ci", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Check(); err != nil {
		t.Fatalf("a new record fails Check: %v", err)
	}
	id, secret, ok := Split(s)
	if !ok || id != tok.ID || !tok.Matches(secret) {
		t.Fatalf("Split(%q) = %q %q %v for record %+v", s, id, secret, ok, tok)
	}
	if strings.Contains(tok.Hash, secret) {
		t.Fatal("the record holds the secret")
	}
	if tok.Matches(secret[:len(secret)-1]+"x") || tok.Matches("") {
		t.Fatal("a wrong secret matches")
	}
	if tok.Expired(now) || !tok.Expired(now.Add(time.Hour)) {
		t.Fatal("expiry is off")
	}
	for _, bad := range []string{"", "hct_", "hct_" + tok.ID, "hct_../etc_" + secret, "xyz_" + tok.ID + "_" + secret, "hct_" + tok.ID + "_" + secret + "x"} {
		if _, _, ok := Split(bad); ok {
			t.Errorf("Split(%q) accepted", bad)
		}
	}
}

func TestScopesNest(t *testing.T) {
	cases := []struct {
		have, need Scope
		ok         bool
	}{
		{ScopeRead, ScopeRead, true}, {ScopeRead, ScopeDeploy, false}, {ScopeRead, ScopeAdmin, false},
		{ScopeDeploy, ScopeRead, true}, {ScopeDeploy, ScopeDeploy, true}, {ScopeDeploy, ScopeAdmin, false},
		{ScopeAdmin, ScopeAdmin, true}, {"", ScopeRead, false}, {"root", ScopeRead, false},
	}
	for _, c := range cases {
		if got := c.have.Allows(c.need); got != c.ok {
			t.Errorf("%q.Allows(%q) = %v", c.have, c.need, got)
		}
	}
	if _, err := ParseScope("Admin"); err == nil {
		t.Error("ParseScope is not case-sensitive")
	}
}

func TestParseTTL(t *testing.T) {
	good := map[string]time.Duration{"": 0, "0": 0, "90m": 90 * time.Minute, "30d": 30 * 24 * time.Hour, "3650d": MaxTTL}
	for s, want := range good {
		if got, err := ParseTTL(s); err != nil || got != want {
			t.Errorf("ParseTTL(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"-1h", "3651d", "1y", "d", "99999999999999999999d", "1e9h"} {
		if _, err := ParseTTL(s); err == nil {
			t.Errorf("ParseTTL(%q) passed", s)
		}
	}
}
