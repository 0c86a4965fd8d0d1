package server

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/cluster/sealed"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// secretBackend is a backend that keeps secrets in memory.
type secretBackend struct {
	*backend
	mu      sync.Mutex
	secrets map[string][]byte
}

func (b *secretBackend) SetSecret(name string, value []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.secrets[name] = bytes.Clone(value)
	return nil
}

func (b *secretBackend) Secrets() []sealed.Info {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []sealed.Info
	for n := range b.secrets {
		out = append(out, sealed.Info{Name: n})
	}
	slices.SortFunc(out, func(a, c sealed.Info) int { return strings.Compare(a.Name, c.Name) })
	return out
}

func (b *secretBackend) RemoveSecret(name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.secrets[name]; !ok {
		return workload.ErrNotFound
	}
	delete(b.secrets, name)
	return nil
}

// TestSecretRoutes checks that PUT stores the raw body, GET lists names
// only, DELETE removes, and bad names or values are refused with 400
// before the backend; and that no answer holds a value.
func TestSecretRoutes(t *testing.T) {
	sb := &secretBackend{backend: newBackend(t), secrets: map[string][]byte{}}
	a := newAPI(t, sb)
	const value = "v@lue with spaces\n"
	if r := a.call("PUT", "/v1/secrets/db-password", value); r.code != 200 || strings.Contains(r.body, value) {
		t.Fatalf("PUT: %d %s", r.code, r.body)
	}
	if got := string(sb.secrets["db-password"]); got != value {
		t.Fatalf("backend holds %q, want the raw body %q", got, value)
	}
	r := a.call("GET", "/v1/secrets", "")
	if r.code != 200 || !strings.Contains(r.body, `"name": "db-password"`) || strings.Contains(r.body, "v@lue") {
		t.Fatalf("GET: %d %s", r.code, r.body)
	}
	for name, c := range map[string]struct{ method, path, body, field string }{
		"bad name":    {"PUT", "/v1/secrets/Bad%20Name", "x", "name"},
		"empty value": {"PUT", "/v1/secrets/ok", "", "value"},
		"NUL":         {"PUT", "/v1/secrets/ok", "a\x00b", "value"},
		"too big":     {"PUT", "/v1/secrets/ok", strings.Repeat("x", spec.MaxSecretBytes+1), "value"},
	} {
		r := a.call(c.method, c.path, c.body)
		if r.code != 400 || r.errorBody(t).Field != c.field {
			t.Errorf("%s: %d %s, want 400 on %s", name, r.code, r.body, c.field)
		}
	}
	if _, ok := sb.secrets["ok"]; ok {
		t.Error("a refused PUT reached the backend")
	}
	if r := a.call("DELETE", "/v1/secrets/db-password", ""); r.code != 200 {
		t.Fatalf("DELETE: %d %s", r.code, r.body)
	}
	if r := a.call("DELETE", "/v1/secrets/db-password", ""); r.code != 404 {
		t.Errorf("DELETE again: %d, want 404", r.code)
	}
	if r := a.callAuth("GET", "/v1/secrets", "", ""); r.code != http.StatusUnauthorized {
		t.Errorf("GET without a token: %d, want 401", r.code)
	}
}
