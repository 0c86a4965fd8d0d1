package e2e

import (
	"encoding/json"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

type spawnAnswer struct {
	ID   string `json:"id"`
	URL  string `json:"url"`
	Node string `json:"node"`
}

func spawn(t *testing.T, n *harness.Node, body string) spawnAnswer {
	t.Helper()
	code, out := n.API("POST", "/spawn", body)
	if code != 200 {
		t.Fatalf("spawn: %d %s", code, out)
	}
	var a spawnAnswer
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.ID == "" || a.URL == "" {
		t.Fatalf("spawn answer %q: %v", out, err)
	}
	return a
}

func workloadCount(t *testing.T, n *harness.Node) int {
	t.Helper()
	code, out := n.API("GET", "/list", "")
	if code != 200 {
		t.Fatalf("list: %d %s", code, out)
	}
	var list struct{ Workloads []json.RawMessage }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	return len(list.Workloads)
}

// TestSingleNode walks the black-box contract of the single-node issue:
// token, spawn, proxy, list, bad input, kill -9 and recovery, stop.
func TestSingleNode(t *testing.T) {
	n, ref := newNode(t)

	code, out := n.APIAs("GET", "/list", "", "")
	if code != 401 || !strings.Contains(out, "api-token") {
		t.Fatalf("no token: %d %s, want 401 naming the token file", code, out)
	}
	if code, _ := n.APIAs("POST", "/spawn", `{"image_ref":"x"}`, "wrong"); code != 401 {
		t.Fatalf("wrong token: %d, want 401", code)
	}

	a := spawn(t, n, `{"cores":1,"memory":128,"image_ref":"`+ref+`","ports":{"80":8080},"env":["A=b"],"dry_run":false}`)
	if a.URL != a.ID+".localhost" {
		t.Fatalf("url %q, want %s.localhost", a.URL, a.ID)
	}
	host := a.ID + ".localhost"
	if code, body := n.Page(80, host); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("proxy: %d %q", code, body)
	}
	if code, _ := n.Page(80, "0b7c1f9e-1d1a-4c3b-9a1e-2b3c4d5e6f70.localhost"); code != 404 {
		t.Fatalf("unknown id through proxy: %d, want 404", code)
	}
	code, out = n.API("GET", "/list", "")
	if code != 200 || !strings.Contains(out, a.ID) || !strings.Contains(out, `"state": "running"`) {
		t.Fatalf("list: %d %s", code, out)
	}

	// Bad input: 400 naming the field, and nothing written.
	before := workloadCount(t, n)
	bad := map[string]struct{ method, path, body, field string }{
		"logs path id":   {"GET", "/logs?id=../../etc/passwd", "", "id"},
		"port 99999":     {"POST", "/spawn", `{"image_ref":"` + ref + `","ports":{"99999":80}}`, "ports"},
		"target 0":       {"POST", "/spawn", `{"image_ref":"` + ref + `","ports":{"80":0}}`, "ports"},
		"bad json":       {"POST", "/spawn", `{"image_ref":`, "body"},
		"unknown field":  {"POST", "/spawn", `{"image_ref":"` + ref + `","colour":"red"}`, "colour"},
		"cores too many": {"POST", "/spawn", `{"image_ref":"` + ref + `","cores":100000}`, "cores"},
		"cores negative": {"POST", "/spawn", `{"image_ref":"` + ref + `","cores":-1}`, "cores"},
		"memory tiny":    {"POST", "/spawn", `{"image_ref":"` + ref + `","memory":1}`, "memory"},
		"memory string":  {"POST", "/spawn", `{"image_ref":"` + ref + `","memory":"lots"}`, "memory"},
		"bad image ref":  {"POST", "/spawn", `{"image_ref":"UPPER/Case::x"}`, "image_ref"},
		"huge body":      {"POST", "/spawn", `{"image_ref":"` + ref + `","env":["A=` + strings.Repeat("x", 1<<20) + `"]}`, "body"},
		"stop bad id":    {"POST", "/stop", `{"id":"../x"}`, "id"},
		"rest bad id":    {"GET", "/v1/workloads/..%2F..%2Fetc", "", "id"},
		"bad env":        {"POST", "/spawn", `{"image_ref":"` + ref + `","env":["no-equals"]}`, "env"},
	}
	for name, c := range bad {
		code, out := n.API(c.method, c.path, c.body)
		var e struct{ Error, Field string }
		json.Unmarshal([]byte(out), &e)
		if code != 400 || e.Field != c.field || e.Error == "" {
			t.Errorf("%s: %d %s, want 400 with field %q", name, code, out, c.field)
		}
	}
	if after := workloadCount(t, n); after != before {
		t.Fatalf("bad input changed the workload count from %d to %d", before, after)
	}
	if code, out := n.API("GET", "/logs?id=0b7c1f9e-1d1a-4c3b-9a1e-2b3c4d5e6f70", ""); code != 404 {
		t.Fatalf("logs of unknown id: %d %s, want 404", code, out)
	}

	// dry_run places and starts nothing.
	code, out = n.API("POST", "/spawn", `{"image_ref":"`+ref+`","dry_run":true}`)
	if code != 200 || !strings.Contains(out, `"dry_run": true`) || workloadCount(t, n) != before {
		t.Fatalf("dry run: %d %s", code, out)
	}

	// The CLI finds the API and token in --data-dir by itself.
	if out, err := n.CLI("exec", a.ID, "--", "cat", "/www/index.html"); err != nil || out != testutil.IndexHTML {
		t.Fatalf("cli exec: %v %q", err, out)
	}
	if out, err := n.CLI("exec", a.ID, "--", "sh", "-c", "exit 7"); err == nil || !strings.Contains(err.Error(), "exit status 7") {
		t.Fatalf("cli exec exit code: %v %q, want exit status 7", err, out)
	}
	if out, err := n.CLI("list"); err != nil || !strings.Contains(out, a.ID) {
		t.Fatalf("cli list: %v %q", err, out)
	}
	n.Page(80, host) // httpd -v logs each request
	harness.WaitFor(t, "httpd's log line", 10e9, func() bool {
		code, out := n.API("GET", "/logs?id="+a.ID, "")
		return code == 200 && strings.Contains(out, "response:200")
	})

	// kill -9 and restart: still running, served, nothing duplicated, same IP.
	var before9 struct{ IP string }
	_, out = n.API("GET", "/v1/workloads/"+a.ID, "")
	json.Unmarshal([]byte(out), &before9)
	if net.ParseIP(before9.IP) == nil {
		t.Fatalf("workload has no IP: %s", out)
	}
	n.Kill9()
	n.Start()
	if code, body := n.Page(80, host); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("after kill -9 and restart: %d %q", code, body)
	}
	var after9 struct{ IP, State string }
	_, out = n.API("GET", "/v1/workloads/"+a.ID, "")
	json.Unmarshal([]byte(out), &after9)
	if after9.IP != before9.IP || after9.State != "running" {
		t.Fatalf("after restart: %s, want running on %s", out, before9.IP)
	}
	if c := workloadCount(t, n); c != 1 {
		t.Fatalf("after restart there are %d workloads, want 1", c)
	}
	if out, err := n.CLI("exec", a.ID, "--", "cat", "/www/index.html"); err != nil || out != testutil.IndexHTML {
		t.Fatalf("exec after restart: %v %q", err, out)
	}

	// Stop: the proxy forgets the host.
	if code, out := n.API("POST", "/stop", `{"id":"`+a.ID+`"}`); code != 200 {
		t.Fatalf("stop: %d %s", code, out)
	}
	if code, _ := n.Page(80, host); code != 404 {
		t.Fatalf("after stop: %d, want 404", code)
	}
	if code, out := n.API("DELETE", "/v1/workloads/"+a.ID, ""); code != 200 {
		t.Fatalf("remove: %d %s", code, out)
	}
	if c := workloadCount(t, n); c != 0 {
		t.Fatalf("after rm there are %d workloads", c)
	}
}

// TestClassicPortMap spawns with the classic {"443": 3000}-style map: with no
// TLS configured, plain :80 serves it.
func TestClassicPortMap(t *testing.T) {
	n, ref := newNode(t)
	a := spawn(t, n, `{"cores":0.5,"memory":64,"image_ref":"`+ref+`","ports":{"443":8080}}`)
	if code, body := n.Page(80, a.ID+".localhost"); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("443 map on :80: %d %q", code, body)
	}
}

// TestDownWorkloadIs502: a workload whose process dies keeps its URL, which
// answers 502 (not 404), and is reported as exited.
func TestDownWorkloadIs502(t *testing.T) {
	n, ref := newNode(t)
	a := spawn(t, n, `{"memory":64,"image_ref":"`+ref+`","ports":{"80":8080}}`)
	_, out := n.API("GET", "/v1/workloads/"+a.ID, "")
	var w struct{ Pid int }
	if err := json.Unmarshal([]byte(out), &w); err != nil || w.Pid <= 0 {
		t.Fatalf("no pid: %s", out)
	}
	if err := syscall.Kill(w.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, "a 502 for the dead workload", 10*time.Second, func() bool {
		code, _ := n.Page(80, a.ID+".localhost")
		return code == 502
	})
	harness.WaitFor(t, "state exited", 10*time.Second, func() bool {
		_, out := n.API("GET", "/v1/workloads/"+a.ID, "")
		return strings.Contains(out, `"state": "exited"`)
	})
}
