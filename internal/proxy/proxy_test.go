package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const id = "497b6ad8-11a3-4701-8b6a-11396e11ca7d"

func get(t *testing.T, h http.Handler, host string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "http://"+host+"/x", nil)
	h.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

func TestRouting(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend saw "+r.Host+r.URL.Path+" xff="+r.Header.Get("X-Forwarded-For")+" xfh="+r.Header.Get("X-Forwarded-Host"))
	}))
	defer backend.Close()
	addr := strings.TrimPrefix(backend.URL, "http://")

	tbl := NewTable()
	p := New("Example.Test", tbl, nil)
	h80 := p.Handler(80)

	if code, _ := get(t, h80, id+".example.test"); code != 404 {
		t.Fatalf("unknown id: %d, want 404", code)
	}
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: addr}})
	if code, _ := get(t, h80, id+".example.test"); code != 503 {
		t.Fatalf("route not ready: %d, want 503", code)
	}
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: addr}, Ready: true})
	code, body := get(t, h80, strings.ToUpper(id)+".example.test:80")
	if code != 200 || !strings.Contains(body, "/x") || !strings.Contains(body, "xff=192.0.2.1") || !strings.Contains(body, "xfh="+strings.ToUpper(id)) {
		t.Fatalf("routed: %d %q", code, body)
	}
	for _, host := range []string{"example.test", "a." + id + ".example.test", id + ".example.test.evil", id + "example.test", "evil.test"} {
		if code, _ := get(t, h80, host); code != 404 {
			t.Errorf("host %q: %d, want 404", host, code)
		}
	}
	if code, _ := get(t, p.Handler(8443), id+".example.test"); code != 404 {
		t.Fatalf("unmapped public port: %d, want 404", code)
	}

	// Only 443 mapped: plain port 80 stands in for it.
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{443: addr}, Ready: true})
	if code, _ := get(t, h80, id+".example.test"); code != 200 {
		t.Fatalf("443-only on :80: %d, want 200", code)
	}

	// A backend that is down gives 502.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close()
	tbl.Set(Route{ID: id, HTTP: map[uint16]string{80: dead}, Ready: true})
	if code, _ := get(t, h80, id+".example.test"); code != 502 {
		t.Fatalf("dead backend: %d, want 502", code)
	}

	tbl.Delete(id)
	if code, _ := get(t, h80, id+".example.test"); code != 404 || tbl.Len() != 0 {
		t.Fatalf("after delete: %d, want 404", code)
	}
}
