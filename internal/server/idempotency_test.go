package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// TestSpawnPassesIdempotencyKey checks that the Idempotency-Key header
// (REST, classic /spawn, Connect) and Connect's request_id field reach
// the backend as the request's key, and that a bad key is refused with
// 400 naming request_id before the backend.
func TestSpawnPassesIdempotencyKey(t *testing.T) {
	b := newBackend(t)
	a := newAPI(t, b)
	body := `{"image_ref":"` + webRef + `"}`
	send := func(path, key string) response {
		req, _ := http.NewRequest("POST", a.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set(IdempotencyKeyHeader, key)
		resp, err := a.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return response{code: resp.StatusCode}
	}
	for _, path := range []string{"/spawn", "/v1/workloads"} {
		if r := send(path, "retry-1"); r.code != 200 {
			t.Fatalf("POST %s with a key: %d", path, r.code)
		}
		if got := b.lastSpawn(t); got.RequestID != "retry-1" {
			t.Errorf("POST %s: backend got key %q, want retry-1", path, got.RequestID)
		}
		before := b.spawnCount()
		req, _ := http.NewRequest("POST", a.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		req.Header.Set(IdempotencyKeyHeader, "../etc")
		resp, err := a.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 || b.spawnCount() != before {
			t.Errorf("POST %s with a bad key: %d, %d spawns reached the backend; want 400 and none", path, resp.StatusCode, b.spawnCount()-before)
		}
	}
	for _, p := range protocols {
		c := a.workloads(p, "Bearer "+testToken)
		msg := &v1.SpawnRequest{Spec: &v1.WorkloadSpec{ImageRef: webRef}, RequestId: "field-1"}
		if _, err := c.Spawn(context.Background(), connect.NewRequest(msg)); err != nil {
			t.Fatalf("%s Spawn with request_id: %v", p.name, err)
		}
		if got := b.lastSpawn(t); got.RequestID != "field-1" {
			t.Errorf("%s Spawn: backend got key %q, want field-1", p.name, got.RequestID)
		}
		req := connect.NewRequest(&v1.SpawnRequest{Spec: &v1.WorkloadSpec{ImageRef: webRef}})
		req.Header().Set(IdempotencyKeyHeader, "header-1")
		if _, err := c.Spawn(context.Background(), req); err != nil {
			t.Fatalf("%s Spawn with the header: %v", p.name, err)
		}
		if got := b.lastSpawn(t); got.RequestID != "header-1" {
			t.Errorf("%s Spawn: backend got key %q, want header-1", p.name, got.RequestID)
		}
		before := b.spawnCount()
		for _, bad := range []*connect.Request[v1.SpawnRequest]{
			connect.NewRequest(&v1.SpawnRequest{Spec: &v1.WorkloadSpec{ImageRef: webRef}, RequestId: "a b"}),
			func() *connect.Request[v1.SpawnRequest] {
				r := connect.NewRequest(&v1.SpawnRequest{Spec: &v1.WorkloadSpec{ImageRef: webRef}, RequestId: "one"})
				r.Header().Set(IdempotencyKeyHeader, "other")
				return r
			}(),
		} {
			_, err := c.Spawn(context.Background(), bad)
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.Contains(ce.Message(), spec.RequestIDField) {
				t.Errorf("%s Spawn with a bad key: %v, want invalid_argument naming %s", p.name, err, spec.RequestIDField)
			}
		}
		if b.spawnCount() != before {
			t.Errorf("%s: a spawn with a bad key reached the backend", p.name)
		}
	}
}
