package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/hypercore-dev/hypercore/api/hypercore/v1/hypercorev1connect"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/nodeinfo"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/volume"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

const (
	testToken    = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testNodeName = "test-node"
	testDomain   = "example.test"
	testAPIAddr  = "127.0.0.1:8000"
	// unknownID is a well-formed workload id that no test creates.
	unknownID = "0b7c1f9e-1d1a-4c3b-9a1e-2b3c4d5e6f70"
)

// backend is the Backend these tests serve: an in-memory stand-in for the
// cluster, so the API is tested without root, a network or a runtime. It
// keeps each workload as the cluster does, an allocation and the hosting
// node's observation joined on every read, answers an unknown id with
// workload.ErrNotFound as the cluster state does, and records what each
// call was asked. Spawn "starts" a workload at once: its node reports it
// running and ready.
type backend struct {
	mu       sync.Mutex
	order    []spec.ID // oldest first, as the cluster lists
	allocs   map[spec.ID]workload.Allocation
	observed map[spec.ID]workload.Observation
	info     nodeinfo.Info
	members  []nodeinfo.Member

	// What reached the backend.
	ids      []spec.ID
	spawns   []spec.SpawnRequest
	stops    []time.Duration
	logOpts  []driver.LogOptions
	execs    []driver.ExecConfig
	attaches []driver.IO

	// Set before the calls to make them fail or answer differently.
	spawnErr error
	pullErr  error
	execErr  error
	logs     string
	exitCode int
	// attach, when set, runs as the workload's main process for Attach.
	attach func(stdio driver.IO) error
	// vols are the volumes (volumes_test.go).
	vols map[string]volume.Info
}

var _ Backend = (*backend)(nil)

// newBackend returns an empty backend: a node alone, with no cluster
// membership to show.
func newBackend(t *testing.T) *backend {
	t.Helper()
	return &backend{
		allocs: map[spec.ID]workload.Allocation{}, observed: map[spec.ID]workload.Observation{},
		info: nodeinfo.Info{
			Name: testNodeName, Cores: 4, MemoryMiB: 8192, Isolations: []spec.Isolation{spec.IsolationContainer, spec.IsolationMicroVM},
			BaseDomain: testDomain, FreeMemoryMiB: 6000, MicroVMAccel: "tcg", APIAddr: testAPIAddr,
		},
		logs: "line 1\nline 2\n",
		vols: map[string]volume.Info{},
	}
}

// get is Get under b.mu, noting that id reached the backend.
func (b *backend) get(id spec.ID) (workload.Workload, error) {
	b.ids = append(b.ids, id)
	a, ok := b.allocs[id]
	if !ok {
		return workload.Workload{}, fmt.Errorf("cluster state: %w: %s", workload.ErrNotFound, id)
	}
	var o *workload.Observation
	if obs, ok := b.observed[id]; ok {
		o = &obs
	}
	return workload.Join(a, o), nil
}

// Get returns the workload joined from its two halves.
func (b *backend) Get(id spec.ID) (workload.Workload, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.get(id)
}

// List returns every workload, oldest first.
func (b *backend) List() ([]workload.Workload, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]workload.Workload, 0, len(b.order))
	for _, id := range b.order {
		w, err := b.get(id)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, nil
}

// Spawn records req and, unless it is a dry run, allocates the workload to
// this node, which reports it running and ready.
func (b *backend) Spawn(ctx context.Context, req spec.SpawnRequest) (workload.Workload, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.spawns = append(b.spawns, req)
	if b.spawnErr != nil {
		return workload.Workload{}, b.spawnErr
	}
	now := time.Now().UTC().Truncate(time.Second)
	a := workload.Allocation{
		ID: spec.NewID(), Spec: req.Spec, Node: testNodeName, Desired: workload.DesiredRunning,
		Generation: 1, CreatedAt: now,
	}
	if req.DryRun {
		return workload.Join(a, nil), nil
	}
	o := workload.Observation{
		Node: testNodeName, Generation: 1, State: workload.StateRunning, IP: "10.77.0.2", Pid: 4242, Ready: true,
		ImageDigest: "sha256:" + strings.Repeat("ab", 32), StartedAt: now,
	}
	b.order = append(b.order, a.ID)
	b.allocs[a.ID], b.observed[a.ID] = a, o
	return workload.Join(a, &o), nil
}

// Stop records the timeout, marks the workload meant to stop and has its
// node report it stopped.
func (b *backend) Stop(ctx context.Context, id spec.ID, timeout time.Duration) (workload.Workload, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stops = append(b.stops, timeout)
	if _, err := b.get(id); err != nil {
		return workload.Workload{}, err
	}
	a := b.allocs[id]
	a.Desired, a.Generation = workload.DesiredStopped, a.Generation+1
	o := b.observed[id]
	o.Generation, o.State, o.Pid, o.IP, o.Ready, o.FinishedAt = a.Generation, workload.StateStopped, 0, "", false, time.Now().UTC()
	b.allocs[id], b.observed[id] = a, o
	return workload.Join(a, &o), nil
}

// Start marks the workload meant to run and has its node report it
// running again.
func (b *backend) Start(ctx context.Context, id spec.ID) (workload.Workload, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := b.get(id); err != nil {
		return workload.Workload{}, err
	}
	a := b.allocs[id]
	a.Desired, a.Generation = workload.DesiredRunning, a.Generation+1
	o := b.observed[id]
	o.Generation, o.State, o.Restarts, o.FinishedAt = a.Generation, workload.StateRunning, 0, time.Time{}
	b.allocs[id], b.observed[id] = a, o
	return workload.Join(a, &o), nil
}

// Remove deletes both halves of the workload.
func (b *backend) Remove(ctx context.Context, id spec.ID) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := b.get(id); err != nil {
		return err
	}
	delete(b.allocs, id)
	delete(b.observed, id)
	b.order = slices.DeleteFunc(b.order, func(x spec.ID) bool { return x == id })
	return nil
}

// Logs answers b.logs and records the options.
func (b *backend) Logs(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := b.get(id); err != nil {
		return nil, err
	}
	b.logOpts = append(b.logOpts, opts)
	return io.NopCloser(strings.NewReader(b.logs)), nil
}

// Exec echoes its stdin to stdout, writes "err\n" to stderr and exits
// with b.exitCode, or fails with b.execErr.
func (b *backend) Exec(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error) {
	b.mu.Lock()
	if _, err := b.get(id); err != nil {
		b.mu.Unlock()
		return -1, err
	}
	b.execs = append(b.execs, cfg)
	code, err := b.exitCode, b.execErr
	b.mu.Unlock()
	if err != nil {
		return -1, err
	}
	if _, err := io.Copy(cfg.Stdout, cfg.Stdin); err != nil {
		return -1, err
	}
	io.WriteString(cfg.Stderr, "err\n")
	return code, nil
}

// Attach runs b.attach as the workload's main process, if set.
func (b *backend) Attach(ctx context.Context, id spec.ID, stdio driver.IO) error {
	b.mu.Lock()
	if _, err := b.get(id); err != nil {
		b.mu.Unlock()
		return err
	}
	b.attaches = append(b.attaches, stdio)
	fn := b.attach
	b.mu.Unlock()
	if fn == nil {
		return nil
	}
	return fn(stdio)
}

// PruneImages is not served by this backend; prune_test.go has its own.
func (b *backend) PruneImages(ctx context.Context) (image.GCResult, error) {
	return image.GCResult{}, errors.New("backend: PruneImages is not part of these tests")
}

// Info describes the node that answers.
func (b *backend) Info() nodeinfo.Info { return b.info }

// Members is nil: a backend alone is no cluster member (see clusterBackend).
func (b *backend) Members() []nodeinfo.Member { return nil }

// URL is <id>.<base-domain>, as the cluster answers.
func (b *backend) URL(id spec.ID) string { return id.String() + "." + testDomain }

// set changes the backend's answers under its lock, as calls may be
// running.
func (b *backend) set(fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fn()
}

// Pull reports one layer's progress and answers with a fixed digest.
func (b *backend) Pull(ctx context.Context, ref string, progress func(image.Progress)) (*image.Image, error) {
	b.mu.Lock()
	err := b.pullErr
	b.mu.Unlock()
	if err != nil {
		return nil, err
	}
	progress(image.Progress{Layer: "0123456789ab", CompleteBytes: 5, TotalBytes: 10})
	progress(image.Progress{Layer: "0123456789ab", CompleteBytes: 10, TotalBytes: 10})
	return &image.Image{Ref: ref, Digest: "sha256:" + strings.Repeat("cd", 32)}, nil
}

// spawnCount is how many spawns reached the backend.
func (b *backend) spawnCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.spawns)
}

// lastSpawn is the last spawn that reached the backend.
func (b *backend) lastSpawn(t *testing.T) spec.SpawnRequest {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.spawns) == 0 {
		t.Fatal("no spawn reached the backend")
	}
	return b.spawns[len(b.spawns)-1]
}

// addWorkload stores a running workload of sp directly, as if spawned.
func (b *backend) addWorkload(t *testing.T, sp spec.Spec) workload.Workload {
	t.Helper()
	w, err := b.Spawn(context.Background(), spec.SpawnRequest{Spec: sp})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// mustSpec builds a Spec from a /spawn body.
func mustSpec(t *testing.T, body string) spec.Spec {
	t.Helper()
	req, err := spec.DecodeSpawnJSON(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req.Spec
}

// clusterBackend is a backend that is part of a cluster.
type clusterBackend struct {
	*backend
	members []nodeinfo.Member
}

func (c clusterBackend) Members() []nodeinfo.Member { return c.members }

// reached returns the ids that reached the backend, in order.
func (b *backend) reached() []spec.ID {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.ids)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// api is one API server under test and the ways to call it.
type api struct {
	t   *testing.T
	b   *backend
	srv *httptest.Server
}

// newAPI serves server.New over b on loopback, with HTTP/1.1 and cleartext
// HTTP/2 as the daemon does, so gRPC clients work too.
func newAPI(t *testing.T, b Backend) *api {
	t.Helper()
	srv := httptest.NewUnstartedServer(New(b, Options{Token: testToken, Version: "v-test", Log: quietLog(), FailedAuthBurst: 1 << 20}))
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	a := &api{t: t, srv: srv}
	switch be := b.(type) {
	case *backend:
		a.b = be
	case clusterBackend:
		a.b = be.backend
	}
	return a
}

// response is an HTTP answer read in full.
type response struct {
	code   int
	header http.Header
	body   string
}

// errorBody decodes the body as the API's error JSON, failing the test if
// it is not one.
func (r response) errorBody(t *testing.T) errorBody {
	t.Helper()
	var e errorBody
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", r.body, err)
	}
	if e.Error == "" || e.Message != e.Error || e.Code == "" {
		t.Fatalf("error body %q lacks error, message or code", r.body)
	}
	return e
}

// callAuth sends method path with body and the given Authorization header
// value ("" sends none).
func (a *api) callAuth(method, path, body, auth string) response {
	a.t.Helper()
	req, err := http.NewRequest(method, a.srv.URL+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.srv.Client().Do(req)
	if err != nil {
		a.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		a.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(data)}
}

// call sends method path with body and the right token.
func (a *api) call(method, path, body string) response {
	a.t.Helper()
	return a.callAuth(method, path, body, "Bearer "+testToken)
}

// callJSON calls and decodes a 200 answer into v.
func (a *api) callJSON(method, path, body string, v any) {
	a.t.Helper()
	r := a.call(method, path, body)
	if r.code != http.StatusOK {
		a.t.Fatalf("%s %s: %d %s", method, path, r.code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		a.t.Errorf("%s %s: Content-Type %q, want application/json", method, path, ct)
	}
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		a.t.Fatalf("%s %s: %v in %s", method, path, err, r.body)
	}
}

// tokenInterceptor adds the API token to every call of a connect client.
type tokenInterceptor struct{ auth string }

func (ti tokenInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if ti.auth != "" {
			req.Header().Set("Authorization", ti.auth)
		}
		return next(ctx, req)
	}
}

func (ti tokenInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, s connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, s)
		if ti.auth != "" {
			conn.RequestHeader().Set("Authorization", ti.auth)
		}
		return conn
	}
}

func (ti tokenInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

// protocols are the wire protocols a connect client can speak to the API.
var protocols = []protocol{
	{"connect+json", false, []connect.ClientOption{connect.WithProtoJSON()}},
	{"connect+proto", false, nil},
	{"grpc", true, []connect.ClientOption{connect.WithGRPC()}},
	{"grpc-web", false, []connect.ClientOption{connect.WithGRPCWeb()}},
}

// protocol is one way a connect client talks; gRPC needs HTTP/2 (h2c).
type protocol struct {
	name string
	h2c  bool
	opts []connect.ClientOption
}

// httpClient returns a client that speaks cleartext HTTP/2 when h2c is
// set (gRPC needs it) and HTTP/1.1 otherwise.
func (a *api) httpClient(h2c bool) *http.Client {
	tr := &http.Transport{}
	if h2c {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	a.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// workloads returns a WorkloadService client speaking p, sending auth as
// its Authorization header ("" sends none).
func (a *api) workloads(p protocol, auth string) hypercorev1connect.WorkloadServiceClient {
	opts := append([]connect.ClientOption{connect.WithInterceptors(tokenInterceptor{auth})}, p.opts...)
	return hypercorev1connect.NewWorkloadServiceClient(a.httpClient(p.h2c), a.srv.URL, opts...)
}

// nodes returns a NodeService client like workloads does.
func (a *api) nodes(p protocol, auth string) hypercorev1connect.NodeServiceClient {
	opts := append([]connect.ClientOption{connect.WithInterceptors(tokenInterceptor{auth})}, p.opts...)
	return hypercorev1connect.NewNodeServiceClient(a.httpClient(p.h2c), a.srv.URL, opts...)
}

// dialUpgrade sends an exec or attach request for path with the stream
// upgrade, and returns the connection's reader and the response head.
// The connection is closed when the test ends.
func (a *api) dialUpgrade(path string) (*http.Response, *bufio.Reader, io.WriteCloser) {
	a.t.Helper()
	conn, err := net.Dial("tcp", a.srv.Listener.Addr().String())
	if err != nil {
		a.t.Fatal(err)
	}
	a.t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\nContent-Length: 0\r\n\r\n", path, testToken, StreamProtocol)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		a.t.Fatal(err)
	}
	return resp, br, conn
}
