package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/internal/apitoken"
)

// memTokens is an in-memory TokenStore, as one node's copy of the cluster
// state would answer.
type memTokens struct {
	mu sync.Mutex
	m  map[string]apitoken.Token
}

func (s *memTokens) CreateToken(t apitoken.Token) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[t.ID] = t
	return nil
}

func (s *memTokens) RevokeToken(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[id]; !ok {
		return apitoken.ErrNotFound
	}
	delete(s.m, id)
	return nil
}

func (s *memTokens) Tokens() []apitoken.Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []apitoken.Token
	for _, t := range s.m {
		out = append(out, t)
	}
	return out
}

func (s *memTokens) Token(id string) (apitoken.Token, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.m[id]
	return t, ok
}

func newTokenAPI(t *testing.T, burst int) (*api, *memTokens) {
	t.Helper()
	store := &memTokens{m: map[string]apitoken.Token{}}
	b := newBackend(t)
	srv := httptest.NewServer(New(b, Options{Token: testToken, Tokens: store, Log: quietLog(), FailedAuthBurst: burst}))
	t.Cleanup(srv.Close)
	return &api{t: t, b: b, srv: srv}, store
}

// makeToken creates a token through the API with the admin token.
func makeToken(t *testing.T, a *api, body string) tokenJSON {
	t.Helper()
	r := a.call("POST", "/v1/tokens", body)
	if r.code != http.StatusCreated {
		t.Fatalf("POST /v1/tokens %s: %d %s", body, r.code, r.body)
	}
	var out tokenJSON
	if err := json.Unmarshal([]byte(r.body), &out); err != nil || out.Token == "" || out.ID == "" {
		t.Fatalf("create answer %s: %v", r.body, err)
	}
	return out
}

func TestScopedTokens(t *testing.T) {
	a, store := newTokenAPI(t, 1<<20)
	read := makeToken(t, a, `{"scope":"read","name":"ci reader"}`)
	deploy := makeToken(t, a, `{"scope":"deploy","ttl":"1h"}`)
	spawn := `{"image_ref":"nginx:1"}`

	// Stored hashed: the record holds no secret.
	rec, _ := store.Token(read.ID)
	if strings.Contains(rec.Hash, read.Token) || rec.Hash == "" || strings.Contains(read.Token, rec.Hash) {
		t.Fatalf("the store holds %+v for token %s", rec, read.Token)
	}

	// read lists, but cannot spawn: 403 naming the scope needed.
	if r := a.callAuth("GET", "/v1/workloads", "", "Bearer "+read.Token); r.code != http.StatusOK {
		t.Fatalf("read token lists: %d %s", r.code, r.body)
	}
	for _, path := range []string{"/spawn", "/v1/workloads"} {
		r := a.callAuth("POST", path, spawn, "Bearer "+read.Token)
		if r.code != http.StatusForbidden || !strings.Contains(r.body, "needs scope deploy") {
			t.Fatalf("read token spawns on %s: %d %s; want 403 naming scope deploy", path, r.code, r.body)
		}
	}
	_, err := a.workloads(protocols[0], "Bearer "+read.Token).Spawn(context.Background(), connect.NewRequest(&v1.SpawnRequest{Spec: &v1.WorkloadSpec{ImageRef: "nginx:1"}}))
	if connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Fatalf("read token spawns over Connect: %v; want permission_denied", err)
	}
	if a.b.spawnCount() != 0 {
		t.Fatal("a read token's spawn reached the backend")
	}

	// deploy spawns, with "bearer" in any case, but cannot make tokens.
	for _, scheme := range []string{"Bearer ", "bearer ", "BEARER "} {
		if r := a.callAuth("POST", "/v1/workloads", `{"image_ref":"nginx:1","dry_run":true}`, scheme+deploy.Token); r.code != http.StatusOK {
			t.Fatalf("deploy token %q spawns: %d %s", scheme, r.code, r.body)
		}
	}
	if r := a.callAuth("POST", "/v1/tokens", `{"scope":"admin"}`, "Bearer "+deploy.Token); r.code != http.StatusForbidden {
		t.Fatalf("deploy token makes a token: %d %s", r.code, r.body)
	}

	// The list shows ids and scopes, never secrets.
	r := a.call("GET", "/v1/tokens", "")
	if r.code != http.StatusOK || !strings.Contains(r.body, read.ID) || strings.Contains(r.body, read.Token) || strings.Contains(r.body, rec.Hash) {
		t.Fatalf("GET /v1/tokens: %d %s", r.code, r.body)
	}

	// Revoked: 401.
	if r := a.call("DELETE", "/v1/tokens/"+read.ID, ""); r.code != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.code, r.body)
	}
	if r := a.callAuth("GET", "/v1/workloads", "", "Bearer "+read.Token); r.code != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d %s, want 401", r.code, r.body)
	}
	if r := a.call("DELETE", "/v1/tokens/"+read.ID, ""); r.code != http.StatusNotFound {
		t.Fatalf("second revoke: %d %s, want 404", r.code, r.body)
	}

	// Expired: 401.
	store.mu.Lock()
	d := store.m[deploy.ID]
	d.ExpiresAt = time.Now().Add(-time.Second)
	store.m[deploy.ID] = d
	store.mu.Unlock()
	if r := a.callAuth("GET", "/v1/workloads", "", "Bearer "+deploy.Token); r.code != http.StatusUnauthorized || !strings.Contains(r.body, "expired") {
		t.Fatalf("expired token: %d %s, want 401 saying expired", r.code, r.body)
	}

	// A right id with a wrong secret is refused too.
	forged := deploy.Token[:len(deploy.Token)-1] + "A"
	if forged == deploy.Token {
		forged = deploy.Token[:len(deploy.Token)-1] + "B"
	}
	if r := a.callAuth("GET", "/v1/workloads", "", "Bearer "+forged); r.code != http.StatusUnauthorized {
		t.Fatalf("forged secret: %d %s", r.code, r.body)
	}

	// Bad requests to create.
	for body, field := range map[string]string{
		`{"scope":"root"}`:                  "scope",
		`{"scope":"read","ttl":"-1h"}`:      "ttl",
		`{"scope":"read","ttl":"99999d"}`:   "ttl",
		`{"scope":"read","name":"a\u0000"}`: "name",
		`{"scope":"read","Scope":"admin"}`:  "Scope",
	} {
		r := a.call("POST", "/v1/tokens", body)
		if r.code != http.StatusBadRequest || r.errorBody(t).Field != field {
			t.Errorf("POST /v1/tokens %s: %d %s; want 400 on %s", body, r.code, r.body, field)
		}
	}
}

// TestFailedAuthIsRateLimited checks that an address that keeps sending
// wrong tokens gets 429, even with the right one, while another address
// is not held back.
func TestFailedAuthIsRateLimited(t *testing.T) {
	a, _ := newTokenAPI(t, 5)
	for i := range 5 {
		if r := a.callAuth("GET", "/v1/workloads", "", "Bearer wrong"); r.code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d, want 401", i, r.code)
		}
	}
	r := a.callAuth("GET", "/v1/workloads", "", "Bearer wrong")
	if r.code != http.StatusTooManyRequests || r.header.Get("Retry-After") == "" {
		t.Fatalf("6th failed attempt: %d %v, want 429 with Retry-After", r.code, r.header)
	}
	if r := a.call("GET", "/v1/workloads", ""); r.code != http.StatusTooManyRequests {
		t.Fatalf("the right token from a blocked address: %d, want 429", r.code)
	}
	// Another address is not blocked.
	h := New(newBackend(t), Options{Token: testToken, Log: quietLog(), FailedAuthBurst: 5})
	req := httptest.NewRequest("GET", "/v1/workloads", nil)
	req.RemoteAddr = "192.0.2.7:1234"
	req.Header.Set("Authorization", "Bearer "+testToken)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("a fresh address: %d", rec.Code)
	}
	// One failure is earned back each second.
	time.Sleep(1100 * time.Millisecond)
	if r := a.call("GET", "/v1/workloads", ""); r.code != http.StatusOK {
		t.Fatalf("after a second: %d %s, want 200", r.code, r.body)
	}
}
