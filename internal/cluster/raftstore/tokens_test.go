package raftstore

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/apitoken"
)

func newToken(t *testing.T, scope apitoken.Scope) (apitoken.Token, string) {
	t.Helper()
	tok, secret, err := apitoken.New(scope, "ci", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok, secret
}

func TestFSMTokens(t *testing.T) {
	f := newFSM()
	tok, _ := newToken(t, apitoken.ScopeRead)
	if err := applyAt(t, f, 1, command{Op: opPutToken, Token: &tok}); err != nil {
		t.Fatalf("put-token: %v", err)
	}
	if err := applyAt(t, f, 2, command{Op: opPutToken, Token: &tok}); err == nil {
		t.Fatal("a second put of the same id was applied")
	}
	bad := tok
	bad.Hash = "not a hash"
	if err := applyAt(t, f, 3, command{Op: opPutToken, Token: &bad}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("put of a record with a bad hash: %v, want ErrBadCommand", err)
	}
	if err := applyAt(t, f, 4, command{Op: opRevokeToken, Token: &apitoken.Token{ID: "../x"}}); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("revoke of a bad id: %v, want ErrBadCommand", err)
	}

	// The record survives a snapshot, and a snapshot from before tokens
	// restores with none.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sink.buf.String(), `"secret"`) {
		t.Fatal("the snapshot holds a secret")
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(&sink.buf)); err != nil {
		t.Fatal(err)
	}
	if got, ok := g.tokens[tok.ID]; !ok || got.Hash != tok.Hash || got.Scope != apitoken.ScopeRead {
		t.Fatalf("restored token %+v %v", got, ok)
	}
	old := newFSM()
	if err := old.Restore(io.NopCloser(strings.NewReader(`{"version":2,"allocations":{}}`))); err != nil {
		t.Fatal(err)
	}
	if old.tokens == nil || len(old.tokens) != 0 {
		t.Fatalf("a snapshot without tokens restored %v", old.tokens)
	}
	if err := applyAt(t, old, 5, command{Op: opPutToken, Token: &tok}); err != nil {
		t.Fatalf("put after restoring an old snapshot: %v", err)
	}

	if err := applyAt(t, g, 6, command{Op: opRevokeToken, Token: &apitoken.Token{ID: tok.ID}}); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, ok := g.tokens[tok.ID]; ok {
		t.Fatal("the revoked token is still there")
	}
	if err := applyAt(t, g, 7, command{Op: opRevokeToken, Token: &apitoken.Token{ID: tok.ID}}); !errors.Is(err, ErrTokenNotFound) {
		t.Fatalf("second revoke: %v, want ErrTokenNotFound", err)
	}
}

// TestTokenRevocationReplicates revokes a token on the leader and checks
// every follower's copy drops it within a second.
func TestTokenRevocationReplicates(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := leaderOf(t, nodes...)
	tok, _ := newToken(t, apitoken.ScopeDeploy)
	if err := leader.s.PutToken(tok); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the token on every node", func() bool {
		for _, n := range nodes {
			if _, ok := n.s.Token(tok.ID); !ok {
				return false
			}
		}
		return true
	})
	if got := leader.s.Tokens(); len(got) != 1 || got[0].ID != tok.ID {
		t.Fatalf("Tokens() = %v", got)
	}
	start := time.Now()
	if err := leader.s.RevokeToken(tok.ID); err != nil {
		t.Fatal(err)
	}
	for _, n := range followers(leader, nodes) {
		for {
			if _, ok := n.s.Token(tok.ID); !ok {
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("%s still holds the token a second after its revocation", n.cfg.NodeID)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
