package e2e

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// vmHWM is a process's peak resident memory in MiB.
func vmHWM(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.Atoi(f[1])
			return kb >> 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}

// TestAPIOverTLSScopedTokensBoundedInput runs a node whose API listens on
// every address, so it speaks TLS only, and checks what an outside script
// checks: the API answers over TLS with the CA from the data dir (curl),
// plain HTTP is refused, a read token made with the CLI gets 403 on spawn
// and 401 once revoked, and a 400 MiB gzip-compressed Connect request gets
// a 4xx while the daemon's peak RSS stays under 200 MiB.
func TestAPIOverTLSScopedTokensBoundedInput(t *testing.T) {
	n, ref := newNode(t, "--grpc-bind-addr", "0.0.0.0:8000")
	ca := filepath.Join(n.DataDir, "cluster", "pki", "ca.crt")

	for _, url := range []string{"https://127.0.0.1:8000/v1/node", "https://localhost:8000/v1/node"} {
		out, err := n.NS.Command("curl", "-sS", "--fail", "--cacert", ca, "-H", "Authorization: Bearer "+n.Token, url).CombinedOutput()
		if err != nil || !strings.Contains(string(out), `"name"`) {
			t.Fatalf("curl --cacert %s %s: %v\n%s", ca, url, err, out)
		}
	}
	if code, body := n.API("GET", "/v1/node", ""); code != http.StatusBadRequest || !strings.Contains(body, "HTTPS") {
		t.Fatalf("plain HTTP to a TLS-only API: %d %s, want 400", code, body)
	}
	if out, err := n.CLI("nodes"); err != nil {
		t.Fatalf("the CLI with the data dir's CA: %v\n%s", err, out)
	}

	pem, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{DialContext: n.NS.Dial, TLSClientConfig: &tls.Config{RootCAs: pool}}}
	call := func(method, path, token, ctype, enc string, body []byte) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "https://127.0.0.1:8000"+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", ctype)
		if enc != "" {
			req.Header.Set("Content-Encoding", enc)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	cliOut, err := n.CLI("token", "create", "--scope", "read", "--name", "e2e")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, cliOut)
	}
	var read, readID string
	for _, line := range strings.Split(cliOut, "\n") {
		if strings.HasPrefix(line, "hct_") {
			read = strings.TrimSpace(line)
			readID = strings.Split(read, "_")[1]
		}
	}
	if read == "" {
		t.Fatalf("token create printed no token:\n%s", cliOut)
	}
	spawn := []byte(`{"image_ref":"` + ref + `","dry_run":true}`)
	if code, body := call("POST", "/v1/workloads", read, "application/json", "", spawn); code != http.StatusForbidden || !strings.Contains(body, "deploy") {
		t.Fatalf("spawn with a read token: %d %s, want 403 naming scope deploy", code, body)
	}
	if code, body := call("GET", "/v1/workloads", read, "application/json", "", nil); code != http.StatusOK {
		t.Fatalf("list with a read token: %d %s", code, body)
	}
	if out, err := n.CLI("token", "revoke", readID); err != nil {
		t.Fatalf("token revoke: %v\n%s", err, out)
	}
	if code, body := call("GET", "/v1/workloads", read, "application/json", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("list with a revoked token: %d %s, want 401", code, body)
	}

	// 400 MiB of env value, gzipped to about 400 KiB as concatenated gzip
	// members.
	member := func(p []byte) []byte {
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		zw.Write(p)
		zw.Close()
		return b.Bytes()
	}
	mib := member(bytes.Repeat([]byte("a"), 1<<20))
	bomb := member([]byte(`{"spec":{"imageRef":"` + ref + `","env":["A=`))
	for range 400 {
		bomb = append(bomb, mib...)
	}
	bomb = append(bomb, member([]byte(`"]}}`))...)
	code, body := call("POST", "/hypercore.v1.WorkloadService/Spawn", n.Token, "application/json", "gzip", bomb)
	if code < 400 || code > 499 {
		t.Fatalf("400 MiB gzip Connect spawn: %d %s, want a 4xx", code, body)
	}
	if hwm := vmHWM(t, n.Pid()); hwm >= 200 {
		t.Fatalf("the daemon's peak RSS is %d MiB after the request; want under 200", hwm)
	} else {
		t.Logf("400 MiB gzip Connect request (%d KiB on the wire): %d; daemon peak RSS %d MiB", len(bomb)>>10, code, hwm)
	}
	if code, body := call("POST", "/v1/workloads", n.Token, "application/json", "", spawn); code != http.StatusOK {
		t.Fatalf("the next valid call: %d %s", code, body)
	}

	// A registry that accepts connections and never answers: 502 naming
	// it after the answer timeout, no workload, and the API still up.
	hang := n.NS.Listen(t, "127.0.0.1:0")
	t.Cleanup(func() { hang.Close() })
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	start := time.Now()
	code, body = call("POST", "/v1/workloads", n.Token, "application/json", "", []byte(`{"image_ref":"`+hang.Addr().String()+`/web:1"}`))
	if code != http.StatusBadGateway || !strings.Contains(body, hang.Addr().String()) {
		t.Fatalf("spawn from a hanging registry: %d %s, want 502 naming it", code, body)
	}
	t.Logf("hanging registry: %d after %s", code, time.Since(start).Round(time.Second))
	if code, body := call("GET", "/v1/workloads", n.Token, "application/json", "", nil); code != http.StatusOK || strings.Contains(body, hang.Addr().String()) {
		t.Fatalf("after the hanging registry: %d %s; want no workload from it", code, body)
	}
}
