package e2e

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/api/hypercore/v1/hypercorev1connect"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// grpcClient speaks real gRPC (HTTP/2 without TLS) to the node's API port.
func grpcClient(n *harness.Node) hypercorev1connect.WorkloadServiceClient {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	hc := &http.Client{Transport: &http.Transport{DialContext: n.NS.Dial, Protocols: p}}
	return hypercorev1connect.NewWorkloadServiceClient(hc, "http://127.0.0.1:8000", connect.WithGRPC())
}

func withToken[T any](msg *T, token string) *connect.Request[T] {
	r := connect.NewRequest(msg)
	if token != "" {
		r.Header().Set("Authorization", "Bearer "+token)
	}
	return r
}

// TestGRPC drives the proto API over gRPC: auth, validation codes, spawn,
// get and logs.
func TestGRPC(t *testing.T) {
	n, ref := newNode(t)
	c := grpcClient(n)
	ctx := context.Background()

	_, err := c.List(ctx, withToken(&v1.ListRequest{}, ""))
	if connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Fatalf("no token: %v, want unauthenticated", err)
	}
	_, err = c.Spawn(ctx, withToken(&v1.SpawnRequest{Spec: &v1.WorkloadSpec{ImageRef: ref, Ports: map[string]int64{"99999": 80}}}, n.Token))
	if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "ports") {
		t.Fatalf("bad port: %v, want invalid_argument naming ports", err)
	}
	res, err := c.Spawn(ctx, withToken(&v1.SpawnRequest{Spec: &v1.WorkloadSpec{ImageRef: ref, Memory: 64, Ports: map[string]int64{"80": 8080}}}, n.Token))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.Id
	if code, body := n.Page(80, id+".localhost"); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("page: %d %q", code, body)
	}
	got, err := c.Get(ctx, withToken(&v1.GetRequest{Id: id}, n.Token))
	if err != nil || got.Msg.Workload.State != "running" || got.Msg.Workload.Spec.Memory != 64 {
		t.Fatalf("get: %v %v", got, err)
	}
	if _, err := c.Get(ctx, withToken(&v1.GetRequest{Id: "../x"}, n.Token)); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Fatalf("get with a bad id: %v", err)
	}
	if _, err := c.Get(ctx, withToken(&v1.GetRequest{Id: "0b7c1f9e-1d1a-4c3b-9a1e-2b3c4d5e6f70"}, n.Token)); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("get unknown: %v", err)
	}
	n.Page(80, id+".localhost")
	harness.WaitFor(t, "a log line over gRPC", 10e9, func() bool {
		stream, err := c.Logs(ctx, withToken(&v1.LogsRequest{Id: id}, n.Token))
		if err != nil {
			return false
		}
		defer stream.Close()
		var all strings.Builder
		for stream.Receive() {
			all.Write(stream.Msg().Data)
		}
		return strings.Contains(all.String(), "response:200")
	})
	if _, err := c.Remove(ctx, withToken(&v1.RemoveRequest{Id: id}, n.Token)); err != nil {
		t.Fatal(err)
	}
	if code, _ := n.Page(80, id+".localhost"); code != 404 {
		t.Fatalf("after remove: %d", code)
	}
}

// TestCrun runs the same workload with crun instead of runc.
func TestCrun(t *testing.T) {
	n, ref := newNode(t, "--runtime", "crun")
	a := spawn(t, n, `{"memory":64,"image_ref":"`+ref+`","ports":{"80":8080}}`)
	if code, body := n.Page(80, a.ID+".localhost"); code != 200 || body != testutil.IndexHTML {
		t.Fatalf("crun page: %d %q", code, body)
	}
	if out, err := n.CLI("exec", a.ID, "--", "cat", "/proc/self/cgroup"); err != nil || !strings.Contains(out, a.ID) {
		t.Fatalf("crun exec: %v %q, want the workload's cgroup", err, out)
	}
}
