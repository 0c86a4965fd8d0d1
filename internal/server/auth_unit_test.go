package server

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/api/hypercore/v1/hypercorev1connect"
	"github.com/hypercore-dev/hypercore/internal/apitoken"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

func TestRequiredScope(t *testing.T) {
	read, deploy, admin := apitoken.ScopeRead, apitoken.ScopeDeploy, apitoken.ScopeAdmin
	cases := []struct {
		method, path string
		want         apitoken.Scope
	}{
		{"POST", hypercorev1connect.WorkloadServiceGetProcedure, read},
		{"POST", hypercorev1connect.WorkloadServiceListProcedure, read},
		{"POST", hypercorev1connect.WorkloadServiceLogsProcedure, read},
		{"POST", hypercorev1connect.NodeServiceInfoProcedure, read},
		{"POST", hypercorev1connect.WorkloadServiceSpawnProcedure, deploy},
		{"POST", hypercorev1connect.WorkloadServiceStopProcedure, deploy},
		{"POST", hypercorev1connect.WorkloadServiceRemoveProcedure, deploy},
		{"POST", hypercorev1connect.WorkloadServicePullProcedure, deploy},
		{"POST", hypercorev1connect.WorkloadServiceStartProcedure, deploy},
		{"POST", hypercorev1connect.VolumeServiceListVolumesProcedure, read},
		{"POST", hypercorev1connect.VolumeServiceGetVolumeProcedure, read},
		{"POST", hypercorev1connect.VolumeServiceCreateVolumeProcedure, deploy},
		{"POST", hypercorev1connect.VolumeServiceRemoveVolumeProcedure, deploy},
		{"POST", hypercorev1connect.NodeServicePruneImagesProcedure, admin},
		{"POST", "/hypercore.v1.WorkloadService/Future", admin},
		{"GET", "/v1/workloads", read},
		{"HEAD", "/list", read},
		{"GET", "/logs", read},
		{"GET", "/v1/node", read},
		{"GET", "/v1/tokens", admin},
		{"DELETE", "/v1/tokens/0123456789abcdef", admin},
		{"POST", "/v1/tokens", admin},
		{"POST", "/spawn", deploy},
		{"POST", "/stop", deploy},
		{"POST", "/v1/workloads", deploy},
		{"DELETE", "/v1/workloads/" + unknownID, deploy},
		{"POST", "/v1/workloads/" + unknownID + "/exec", deploy},
		{"POST", "/v1/workloads/" + unknownID + "/start", deploy},
		{"GET", "/v1/volumes", read},
		{"POST", "/v1/volumes", deploy},
		{"DELETE", "/v1/volumes/pgdata", deploy},
		{"GET", "/v1/secrets", read},
		{"PUT", "/v1/secrets/db-password", admin},
		{"DELETE", "/v1/secrets/db-password", admin},
		{"POST", "/v1/other", admin},
		{"PUT", "/list", admin},
	}
	for _, c := range cases {
		r := httptest.NewRequest(c.method, c.path, nil)
		if got := requiredScope(r); got != c.want {
			t.Errorf("%s %s needs %q, want %q", c.method, c.path, got, c.want)
		}
	}
}

func TestClientAddr(t *testing.T) {
	for remote, want := range map[string]string{"192.0.2.1:5555": "192.0.2.1", "[2001:db8::1]:80": "2001:db8::1", "pipe": "pipe"} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		if got := clientAddr(r); got != want {
			t.Errorf("clientAddr(%q) = %q, want %q", remote, got, want)
		}
	}
}

// TestFailLimiter drives the per-address bucket with its own clock.
func TestFailLimiter(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	l := &failLimiter{clients: map[string]*bucket{}, burst: 3}
	if w := l.blocked("a", t0); w != 0 {
		t.Fatalf("a new address waits %s", w)
	}
	for i := range 3 {
		if w := l.blocked("a", t0); w != 0 {
			t.Fatalf("after %d failures: waits %s", i, w)
		}
		l.fail("a", t0)
	}
	w := l.blocked("a", t0)
	if w != authRefill {
		t.Fatalf("after 3 failures (the burst): waits %s, want %s", w, authRefill)
	}
	if w := l.blocked("a", t0.Add(authRefill/2)); w != authRefill/2 {
		t.Fatalf("half a refill later: waits %s, want %s", w, authRefill/2)
	}
	if w := l.blocked("a", t0.Add(authRefill)); w != 0 {
		t.Fatalf("a refill later: waits %s", w)
	}
	// A long rest earns back the burst, and no more.
	later := t0.Add(time.Hour)
	for range 3 {
		l.fail("a", later)
	}
	if w := l.blocked("a", later); w == 0 {
		t.Fatal("an hour of rest earned more than the burst")
	}
	// One more failure than there is left never goes below empty.
	l.fail("a", later)
	if w := l.blocked("a", later); w != authRefill {
		t.Fatalf("failing an empty bucket: waits %s, want %s", w, authRefill)
	}
	if w := l.blocked("b", later); w != 0 {
		t.Fatalf("another address waits %s", w)
	}
}

// TestFailLimiterBoundsAddresses fills the table: addresses that have
// recovered are forgotten to make room, and when none has, newcomers share
// one bucket.
func TestFailLimiterBoundsAddresses(t *testing.T) {
	t0 := time.Date(2026, 12, 8, 0, 0, 0, 0, time.UTC)
	l := &failLimiter{clients: map[string]*bucket{}, burst: 2}
	for i := range authMaxClient {
		l.fail(fmt.Sprint("old", i), t0)
	}
	if len(l.clients) != authMaxClient {
		t.Fatalf("%d addresses tracked", len(l.clients))
	}
	// None has recovered yet: the newcomers share the overflow bucket.
	l.fail("new1", t0)
	l.fail("new2", t0)
	if len(l.clients) != authMaxClient+1 || l.clients["overflow"] == nil {
		t.Fatalf("%d addresses tracked, overflow %v", len(l.clients), l.clients["overflow"])
	}
	if w := l.blocked("overflow", t0); w == 0 {
		t.Fatal("two newcomers' failures did not empty the shared bucket")
	}
	// A refill later the old ones have recovered and are forgotten.
	l.fail("new3", t0.Add(authRefill))
	if len(l.clients) > 3 || l.clients["new3"] == nil {
		t.Fatalf("%d addresses tracked after the old recovered", len(l.clients))
	}
}

func TestRetryAfter(t *testing.T) {
	a, _ := newTokenAPI(t, 1)
	a.callAuth("GET", "/v1/workloads", "", "Bearer wrong")
	r := a.callAuth("GET", "/v1/workloads", "", "Bearer wrong")
	n, err := strconv.Atoi(r.header.Get("Retry-After"))
	if r.code != http.StatusTooManyRequests || err != nil || n < 1 || n > 2 {
		t.Fatalf("blocked: %d, Retry-After %q; want 429 and 1 or 2 seconds", r.code, r.header.Get("Retry-After"))
	}
}

// TestBodyBoundOnTheWire checks the Content-Length bound: a body declared
// at the bound reaches the decoder (which refuses it as too large for a
// spec, 400), one byte more is refused before it is read (413).
func TestBodyBoundOnTheWire(t *testing.T) {
	a := newAPI(t, newBackend(t))
	for size, want := range map[int]int{maxWireBody: http.StatusBadRequest, maxWireBody + 1: http.StatusRequestEntityTooLarge} {
		body := `{"image_ref":"nginx:1","env":["A=` + strings.Repeat("a", size-len(`{"image_ref":"nginx:1","env":["A="]}`)) + `"]}`
		if len(body) != size {
			t.Fatalf("body of %d bytes, want %d", len(body), size)
		}
		r := a.call("POST", "/v1/workloads", body)
		if r.code != want || r.errorBody(t).Field != "body" {
			t.Errorf("a body of %d bytes: %d %s, want %d on body", size, r.code, truncateTest(r.body), want)
		}
	}
	if spec.MaxBodyBytes >= maxWireBody {
		t.Fatal("the wire bound leaves no room for envelopes")
	}
}

func TestConnectUnknownFieldMessage(t *testing.T) {
	err := strictJSONCodec{name: "json"}.Unmarshal([]byte(`{"spec":{"imageRef":"x","privileged":true}}`), newSpawnRequest())
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "privileged: is not a known field") {
		t.Fatalf("unknown field: %v", err)
	}
	err = strictJSONCodec{name: "json"}.Unmarshal([]byte(`{"spec":{"imageRef":1}}`), newSpawnRequest())
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "body: ") {
		t.Fatalf("a number for a string: %v", err)
	}
	err = strictJSONCodec{name: "json"}.Unmarshal(nil, newSpawnRequest())
	if connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("an empty body: %v", err)
	}
}

func newSpawnRequest() *v1.SpawnRequest { return &v1.SpawnRequest{} }
