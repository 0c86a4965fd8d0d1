package e2e

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// hangingRegistry listens on addr inside ns, accepts every connection and
// never answers, as a registry that hangs does. closeAll drops what it
// holds, so the pulls waiting on it fail and the test's cleanup can
// remove their workloads.
func hangingRegistry(t *testing.T, ns *harness.NetNS, addr string) (accepted func() int64, closeAll func()) {
	l := ns.Listen(t, addr)
	var n atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	var once sync.Once
	closeAll = func() {
		once.Do(func() {
			l.Close()
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		})
	}
	t.Cleanup(closeAll)
	return n.Load, closeAll
}

// TestRestartDuringHungSpawn kills the daemon with kill -9 while a spawn
// waits on a registry that accepts TCP and never answers. The restarted
// node must open its API and proxy at once (the contract: within 5 s),
// keep serving the workload that ran before, show the interrupted one as
// creating, and not route to it, while its start goes on in the background.
func TestRestartDuringHungSpawn(t *testing.T) {
	n, ref := newNode(t)
	accepted, release := hangingRegistry(t, n.NS, "127.0.0.1:5001")

	up := spawn(t, n, `{"image_ref":"`+ref+`","ports":{"80":8080}}`)
	done := make(chan struct{})
	go func() {
		defer close(done)
		spawnKeyed(n, "hung-spawn-1", `{"image_ref":"127.0.0.1:5001/hangs:1","ports":{"80":8080}}`)
	}()
	harness.WaitFor(t, "the spawn to reach the hanging registry", 30*time.Second, func() bool { return accepted() > 0 })
	n.Kill9()
	<-done

	t0 := time.Now()
	n.Start()
	code, out := n.API("GET", "/v1/workloads", "")
	back := time.Since(t0)
	t.Logf("API back %v after the restart began", back)
	if code != 200 {
		t.Fatalf("list after restart: %d %s", code, out)
	}
	if back > 5*time.Second {
		t.Errorf("API back after %v, want within 5 s", back)
	}
	var list struct {
		Workloads []struct {
			ID    string `json:"id"`
			State string `json:"state"`
			IP    string `json:"ip"`
			Image string `json:"image_ref"`
		} `json:"workloads"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatal(err)
	}
	var hung string
	for _, w := range list.Workloads {
		if strings.HasPrefix(w.Image, "127.0.0.1:5001/") {
			hung = w.ID
			if w.State != "creating" {
				t.Errorf("interrupted spawn %s is %q after restart, want creating while its pull hangs", w.ID, w.State)
			}
		}
	}
	if hung == "" || len(list.Workloads) != 2 {
		t.Fatalf("workloads after restart: %s, want the running one and the interrupted one, no duplicate", out)
	}
	// The client never heard of its spawn; its retry with the same key
	// gets that workload, not a second one.
	if code, out := spawnKeyed(n, "hung-spawn-1", `{"image_ref":"127.0.0.1:5001/hangs:1","ports":{"80":8080}}`); code != 200 || !strings.Contains(out, hung) {
		t.Errorf("retry with the same idempotency key: %d %s, want 200 with %s", code, out, hung)
	}
	if c := workloadCount(t, n); c != 2 {
		t.Errorf("%d workloads after the retry, want 2: a retry must not duplicate", c)
	}
	if code, body := n.Page(80, up.ID+".localhost"); code != 200 || body != testutil.IndexHTML {
		t.Errorf("workload that ran before, through the proxy: %d %q, want 200 at once", code, body)
	}
	if code, _ := n.Page(80, hung+".localhost"); code != 503 {
		t.Errorf("interrupted spawn through the proxy: %d, want 503 while it is creating", code)
	}
	release()
}

// spawnKeyed spawns body through the classic /spawn with an
// Idempotency-Key header.
func spawnKeyed(n *harness.Node, key, body string) (int, string) {
	req, _ := http.NewRequest("POST", "http://127.0.0.1:8000/spawn", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+n.Token)
	req.Header.Set("Idempotency-Key", key)
	resp, err := n.NS.Client().Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
