package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/api/hypercore/v1/hypercorev1connect"
)

// everyRoute is one call of each route the API serves, with a body that
// would succeed if the call were let through.
func everyRoute(id string) [][3]string {
	spawn := `{"image_ref":"registry.example/web:1"}`
	return [][3]string{
		{"POST", "/spawn", spawn},
		{"POST", "/stop", `{"id":"` + id + `"}`},
		{"GET", "/list", ""},
		{"GET", "/logs?id=" + id, ""},
		{"GET", "/v1/workloads", ""},
		{"POST", "/v1/workloads", spawn},
		{"GET", "/v1/workloads/" + id, ""},
		{"DELETE", "/v1/workloads/" + id, ""},
		{"POST", "/v1/workloads/" + id + "/stop", ""},
		{"GET", "/v1/workloads/" + id + "/logs", ""},
		{"POST", "/v1/workloads/" + id + "/exec?cmd=true", ""},
		{"POST", "/v1/workloads/" + id + "/attach", ""},
		{"GET", "/v1/node", ""},
		{"GET", "/v1/nodes", ""},
		{"POST", hypercorev1connect.WorkloadServiceListProcedure, "{}"},
		{"POST", hypercorev1connect.WorkloadServiceRemoveProcedure, `{"id":"` + id + `"}`},
		{"POST", hypercorev1connect.NodeServiceInfoProcedure, "{}"},
		// An unknown route must not tell a caller without the token
		// what exists.
		{"GET", "/no/such/route", ""},
	}
}

// TestAuthRefusesEveryRouteWithoutTheToken checks that no route answers,
// or reaches the backend, without the exact bearer token, and that the
// refusal tells the caller how to authenticate and where the token is.
func TestAuthRefusesEveryRouteWithoutTheToken(t *testing.T) {
	a := newAPI(t, newBackend(t))
	w := a.b.addWorkload(t, mustSpec(t, `{"image_ref":"registry.example/web:1"}`))
	bad := map[string]string{
		"no header":          "",
		"wrong token":        "Bearer " + strings.Repeat("x", len(testToken)),
		"token prefix":       "Bearer " + testToken[:len(testToken)-1],
		"token and more":     "Bearer " + testToken + "0",
		"no scheme":          testToken,
		"basic scheme":       "Basic " + testToken,
		"scheme only":        "Bearer ",
		"token in uppercase": "Bearer " + strings.ToUpper(testToken),
	}
	for what, auth := range bad {
		for _, rt := range everyRoute(w.ID.String()) {
			r := a.callAuth(rt[0], rt[1], rt[2], auth)
			if r.code != http.StatusUnauthorized {
				t.Errorf("%s: %s %s: %d %s, want 401", what, rt[0], rt[1], r.code, r.body)
				continue
			}
			if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("%s: %s %s: WWW-Authenticate %q, want the Bearer scheme", what, rt[0], rt[1], got)
			}
			e := r.errorBody(t)
			if e.Code != "unauthenticated" || !strings.Contains(e.Error, "Authorization: Bearer") || !strings.Contains(e.Error, "api-token") {
				t.Errorf("%s: %s %s: body %s, want code unauthenticated and a message naming the header and the api-token file", what, rt[0], rt[1], r.body)
			}
			if strings.Contains(r.body, "/var/") || strings.Contains(r.body, "/etc/") {
				t.Errorf("%s: %s %s: the 401 body %s shows a path on the host", what, rt[0], rt[1], r.body)
			}
		}
	}
	if n := a.b.spawnCount(); n != 1 {
		t.Errorf("%d spawns reached the backend, want only the test's own", n)
	}
	if _, err := a.b.Get(w.ID); err != nil {
		t.Errorf("the workload is gone after unauthenticated calls: %v", err)
	}
}

// TestAuthLetsTheTokenThrough checks that the right token reaches the
// handlers on the REST, classic and connect routes.
func TestAuthLetsTheTokenThrough(t *testing.T) {
	a := newAPI(t, newBackend(t))
	for _, path := range []string{"/list", "/v1/workloads", "/v1/node"} {
		if r := a.call("GET", path, ""); r.code != http.StatusOK {
			t.Errorf("GET %s with the token: %d %s", path, r.code, r.body)
		}
	}
	for _, p := range protocols {
		if _, err := a.workloads(p, "Bearer "+testToken).List(context.Background(), connect.NewRequest(&v1.ListRequest{})); err != nil {
			t.Errorf("%s: List with the token: %v", p.name, err)
		}
	}
}

// TestAuthConnectClientsSeeUnauthenticated checks that every connect
// protocol turns the 401 into CodeUnauthenticated with the same message
// as REST, so the CLI and SDKs can tell the user what to do.
func TestAuthConnectClientsSeeUnauthenticated(t *testing.T) {
	a := newAPI(t, newBackend(t))
	for _, p := range protocols {
		for _, auth := range []string{"", "Bearer wrong"} {
			want := a.callAuth("GET", "/v1/workloads", "", auth).errorBody(t).Error
			_, err := a.workloads(p, auth).List(context.Background(), connect.NewRequest(&v1.ListRequest{}))
			if connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("%s, auth %q: %v, want unauthenticated", p.name, auth, err)
				continue
			}
			// gRPC carries no body on an HTTP error, so only the
			// protocols that read one can show the message.
			var ce *connect.Error
			if !p.h2c && p.name != "grpc-web" && (!errors.As(err, &ce) || ce.Message() != want) {
				t.Errorf("%s: message %q, want %q", p.name, ce.Message(), want)
			}
		}
	}
}

// TestAuthEmptyTokenRefusesEverything checks that an API set up without a
// token fails closed: no header value, not even "Bearer ", gets in.
func TestAuthEmptyTokenRefusesEverything(t *testing.T) {
	reached := false
	h := Authenticate(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true }), Options{})
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer  "} {
		req := httptest.NewRequest("GET", "/v1/workloads", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized || reached {
			t.Errorf("empty token, Authorization %q: %d (handler reached: %v), want 401", auth, rec.Code, reached)
		}
		reached = false
	}
}

// TestHandlerHasNoTokenCheck checks that Handler, the API for a caller
// that authenticates in front of it, does not ask for the token while New
// does.
func TestHandlerHasNoTokenCheck(t *testing.T) {
	b := newBackend(t)
	for name, h := range map[string]http.Handler{
		"Handler": Handler(b, Options{Token: testToken, Log: quietLog()}),
		"New":     New(b, Options{Token: testToken, Log: quietLog()}),
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/workloads", nil))
		want := http.StatusOK
		if name == "New" {
			want = http.StatusUnauthorized
		}
		if rec.Code != want {
			t.Errorf("%s without a token: %d, want %d", name, rec.Code, want)
		}
	}
}
