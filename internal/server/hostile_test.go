package server

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
)

// hostileCase is one request a hostile or clumsy client sends.
type hostileCase struct {
	name    string
	method  string
	path    string
	header  map[string]string
	body    []byte
	h2c     bool // send over cleartext HTTP/2 (gRPC)
	field   string
	grpcErr bool // the refusal is in grpc-status, under HTTP 200
}

const (
	connectSpawn = "/hypercore.v1.WorkloadService/Spawn"
	jsonCT       = "application/json"
)

func hdr(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// gzipBomb is a gzip stream of prefix, n MiB of 'a', then suffix, made of
// concatenated gzip members so that building it costs little: 400 MiB of
// decompressed input travels as about 400 KiB.
func gzipBomb(t *testing.T, prefix string, mib int, suffix string) []byte {
	t.Helper()
	member := func(p []byte) []byte {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		zw.Write(p)
		zw.Close()
		return b.Bytes()
	}
	mb := member(bytes.Repeat([]byte("a"), 1<<20))
	out := member([]byte(prefix))
	for range mib {
		out = append(out, mb...)
	}
	return append(out, member([]byte(suffix))...)
}

// grpcFrame wraps msg in a gRPC (or gRPC-Web) length-prefixed envelope.
func grpcFrame(msg []byte, compressed bool) []byte {
	out := make([]byte, 5, 5+len(msg))
	if compressed {
		out[0] = 1
	}
	binary.BigEndian.PutUint32(out[1:], uint32(len(msg)))
	return append(out, msg...)
}

func hostileCases(t *testing.T) []hostileCase {
	spawnBody := func(extra string) []byte {
		return []byte(`{"image_ref":"nginx:1"` + extra + `}`)
	}
	connectBody := func(s string) []byte { return []byte(s) }
	bomb := gzipBomb(t, `{"spec":{"imageRef":"nginx:1","env":["A=`, 400, `"]}}`)
	grpcBomb := func() []byte {
		// A proto SpawnRequest whose spec.env holds one 400 MiB string,
		// gzipped: field 1 (spec) { field 5 (env) "A=aaaa..." }.
		env := 400 << 20
		inner := protowire.AppendTag(nil, 5, protowire.BytesType)
		inner = protowire.AppendVarint(inner, uint64(env))
		specLen := len(inner) + env
		outer := protowire.AppendTag(nil, 1, protowire.BytesType)
		outer = protowire.AppendVarint(outer, uint64(specLen))
		return grpcFrame(gzipBomb(t, string(append(outer, inner...)), 400, ""), true)
	}()
	unknownProto := func() []byte {
		m, _ := proto.Marshal(&v1.SpawnRequest{Spec: &v1.WorkloadSpec{ImageRef: "nginx:1"}})
		m = protowire.AppendTag(m, 99, protowire.VarintType)
		return protowire.AppendVarint(m, 1)
	}()
	nested := `{"image_ref":"nginx:1","env":` + strings.Repeat("[", 5000) + strings.Repeat("]", 5000) + `}`
	big := append(append([]byte(`{"image_ref":"nginx:1","env":["A=`), bytes.Repeat([]byte("a"), 10<<20)...), `"]}`...)
	ct := hdr("Content-Type", jsonCT)
	return []hostileCase{
		{name: "unknown field", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"privileged":true`), field: "privileged"},
		{name: "wrong-case key", method: "POST", path: "/v1/workloads", header: ct, body: []byte(`{"IMAGE_REF":"nginx:1"}`), field: "IMAGE_REF"},
		{name: "duplicate key", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"ports":{"80":8080,"80":9090}`), field: "ports.80"},
		{name: "duplicate public port", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"ports":{"80":8080,"http:80":9090}`), field: "ports"},
		{name: "bad port", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"ports":{"70000":80}`), field: "ports"},
		{name: "bad target port", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"ports":{"80":0}`), field: "ports"},
		{name: "port key not a number", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"ports":{"../80":80}`), field: "ports"},
		{name: "cores too many", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"cores":100000`), field: "cores"},
		{name: "cores negative", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"cores":-1`), field: "cores"},
		{name: "cores overflow", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"cores":1e400`), field: "cores"},
		{name: "memory too small", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"memory":1`), field: "memory"},
		{name: "memory too large", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"memory":99999999999`), field: "memory"},
		{name: "env without =", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"env":["NOEQUALS"]`), field: "env"},
		{name: "env with NUL", method: "POST", path: "/spawn", header: ct, body: spawnBody(`,"env":["A=b\u0000c"]`), field: "env"},
		{name: "image ref with a scheme", method: "POST", path: "/spawn", header: ct, body: []byte(`{"image_ref":"file:///etc/passwd"}`), field: "image_ref"},
		{name: "image ref with ..", method: "POST", path: "/spawn", header: ct, body: []byte(`{"image_ref":"127.0.0.1:5000/../../etc:1"}`), field: "image_ref"},
		{name: "10 MB body", method: "POST", path: "/spawn", header: ct, body: big, field: "body"},
		{name: "nested body", method: "POST", path: "/v1/workloads", header: ct, body: []byte(nested), field: "env"},
		{name: "gzip on REST", method: "POST", path: "/v1/workloads", header: hdr("Content-Type", jsonCT, "Content-Encoding", "gzip"), body: bomb, field: "body"},
		{name: "traversal id in path", method: "GET", path: "/v1/workloads/..%2f..%2fetc%2fpasswd", field: "id"},
		{name: "traversal id in stop", method: "POST", path: "/stop", header: ct, body: []byte(`{"id":"../../` + unknownID + `"}`), field: "id"},
		{name: "traversal id in logs", method: "GET", path: "/logs?id=../../etc/passwd", field: "id"},
		{name: "traversal id in exec", method: "POST", path: "/v1/workloads/..%2f" + unknownID + "/exec?cmd=sh", field: "id"},
		{name: "connect unknown field", method: "POST", path: connectSpawn, header: ct, body: connectBody(`{"spec":{"imageRef":"nginx:1","privileged":true}}`), field: "privileged"},
		{name: "connect hostNetwork", method: "POST", path: connectSpawn, header: ct, body: connectBody(`{"spec":{"imageRef":"nginx:1"},"hostNetwork":true}`), field: "hostNetwork"},
		{name: "connect wrong-case key", method: "POST", path: connectSpawn, header: ct, body: connectBody(`{"spec":{"IMAGE_REF":"nginx:1"}}`), field: "IMAGE_REF"},
		{name: "connect duplicate key", method: "POST", path: connectSpawn, header: ct, body: connectBody(`{"spec":{"imageRef":"nginx:1","imageRef":"evil:1"}}`), field: "spec.imageRef"},
		{name: "connect duplicate port", method: "POST", path: connectSpawn, header: ct, body: connectBody(`{"spec":{"imageRef":"nginx:1","ports":{"80":1,"80":2}}}`), field: "spec.ports.80"},
		{name: "connect bad image ref", method: "POST", path: connectSpawn, header: ct, body: connectBody(`{"spec":{"imageRef":"file:///etc/passwd"}}`), field: "image_ref"},
		{name: "connect 400 MiB gzip", method: "POST", path: connectSpawn, header: hdr("Content-Type", jsonCT, "Content-Encoding", "gzip"), body: bomb},
		{name: "connect proto unknown field", method: "POST", path: connectSpawn, header: hdr("Content-Type", "application/proto"), body: unknownProto, field: "field number 99"},
		{name: "grpc 400 MiB gzip", method: "POST", path: connectSpawn, h2c: true, grpcErr: true, header: hdr("Content-Type", "application/grpc", "Grpc-Encoding", "gzip", "Te", "trailers"), body: grpcBomb},
		{name: "grpc-web 400 MiB gzip", method: "POST", path: connectSpawn, grpcErr: true, header: hdr("Content-Type", "application/grpc-web", "Grpc-Encoding", "gzip"), body: grpcBomb},
		{name: "grpc-web unknown field", method: "POST", path: connectSpawn, grpcErr: true, header: hdr("Content-Type", "application/grpc-web"), body: grpcFrame(unknownProto, false), field: "field number 99"},
	}
}

// TestHostileInput sends each hostile request and checks that it is
// refused with a 4xx naming the field, that nothing reached the backend's
// spawn or changed its workloads, that the process did not balloon, and
// that the next valid call works.
func TestHostileInput(t *testing.T) {
	b := newBackend(t)
	a := newAPI(t, b)
	for _, c := range hostileCases(t) {
		t.Run(c.name, func(t *testing.T) {
			before := b.spawnCount()
			wls, _ := b.List()
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			alloc0 := ms.TotalAlloc

			status, header, body := a.send(t, c)

			runtime.ReadMemStats(&ms)
			// The body itself is at most 10 MiB; reading it whole or
			// inflating a bomb would cost hundreds.
			if grown := ms.TotalAlloc - alloc0; grown > 64<<20 {
				t.Errorf("the server allocated %d MiB for this request; it should stop reading at the limit", grown>>20)
			}
			if c.grpcErr {
				gs := header.Get("Grpc-Status")
				if gs == "" {
					gs = grpcWebStatus(body)
				}
				if gs == "" || gs == "0" {
					t.Fatalf("gRPC status %q (HTTP %d, %q), want an error", gs, status, truncateTest(body))
				}
			} else if status < 400 || status > 499 {
				t.Fatalf("status %d (%s), want a 4xx", status, truncateTest(body))
			}
			if c.field != "" && !strings.Contains(body+header.Get("Grpc-Message"), c.field) {
				t.Errorf("answer %q does not name %q", truncateTest(body+header.Get("Grpc-Message")), c.field)
			}
			if strings.Contains(body, "/var/lib") || strings.Contains(body, "/etc/passwd\"") {
				t.Errorf("answer %q shows a host path", truncateTest(body))
			}
			if got := b.spawnCount(); got != before {
				t.Errorf("%d spawns reached the backend", got-before)
			}
			if after, _ := b.List(); len(after) != len(wls) {
				t.Errorf("workloads went from %d to %d", len(wls), len(after))
			}
			r := a.call("POST", "/v1/workloads", `{"image_ref":"nginx:1","dry_run":true}`)
			if r.code != http.StatusOK {
				t.Fatalf("the next valid call: %d %s", r.code, r.body)
			}
		})
	}
}

func truncateTest(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// grpcWebStatus finds grpc-status in a gRPC-Web body's trailer frame.
func grpcWebStatus(body string) string {
	i := strings.Index(strings.ToLower(body), "grpc-status:")
	if i < 0 {
		return ""
	}
	rest := strings.TrimSpace(body[i+len("grpc-status:"):])
	if j := strings.IndexAny(rest, "\r\n"); j >= 0 {
		rest = rest[:j]
	}
	return strings.TrimSpace(rest)
}

// send makes c's request with the API token and reads the answer in full.
func (a *api) send(t *testing.T, c hostileCase) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(c.method, a.srv.URL+c.path, bytes.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := a.httpClient(c.h2c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	h := resp.Header.Clone()
	for k, v := range resp.Trailer {
		h[k] = v
	}
	return resp.StatusCode, h, string(data)
}

// TestOddHostBytes sends Host headers no client should, on a raw
// connection, and checks each gets a 400 and the API keeps answering.
func TestOddHostBytes(t *testing.T) {
	a := newAPI(t, newBackend(t))
	addr := strings.TrimPrefix(a.srv.URL, "http://")
	for _, host := range []string{"a\x01b", "a b", "[::1", "a\x7fb", "exa mple:80", "x:99999999999999999999"} {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(conn, "GET /v1/node HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", host, testToken)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		conn.Close()
		if err != nil {
			t.Fatalf("Host %q: %v", host, err)
		}
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("Host %q: status %d, want 400", host, resp.StatusCode)
		}
		var info map[string]any
		a.callJSON("GET", "/v1/node", "", &info)
	}
}

var _ = json.Marshal
