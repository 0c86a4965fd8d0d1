package server

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/nodeinfo"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// TestBackendErrorsMapAlike checks that each kind of error a backend
// returns gets the same answer through REST and every connect protocol:
// the HTTP status and field on REST, and one Connect code and message in
// the REST body and on the connect side.
func TestBackendErrorsMapAlike(t *testing.T) {
	cases := []struct {
		err   error
		code  int
		ccode connect.Code
		field string
	}{
		{&spec.FieldError{Field: "ports", Msg: "is odd"}, 400, connect.CodeInvalidArgument, "ports"},
		{fmt.Errorf("%w: x", workload.ErrNotFound), 404, connect.CodeNotFound, ""},
		{fmt.Errorf("%w: x", driver.ErrNotFound), 404, connect.CodeNotFound, ""},
		{fmt.Errorf("%w: it asks for 64 GiB", workload.ErrNoCapacity), 409, connect.CodeResourceExhausted, ""},
		{fmt.Errorf("%w: no microvm here", workload.ErrUnsupported), 400, connect.CodeFailedPrecondition, "isolation"},
		{fmt.Errorf("pull: %w: no such tag", image.ErrNotFound), 400, connect.CodeInvalidArgument, "image_ref"},
		{fmt.Errorf("pull: %w: connection refused", image.ErrRegistry), 502, connect.CodeUnavailable, "image_ref"},
		{fmt.Errorf("pull: %w", context.Canceled), 499, connect.CodeCanceled, ""},
		{fmt.Errorf("%w: node n2 is down", workload.ErrUnreachable), 503, connect.CodeUnavailable, ""},
		{errors.New("disk on fire"), 500, connect.CodeInternal, ""},
	}
	b := newBackend(t)
	a := newAPI(t, b)
	body := `{"image_ref":"` + webRef + `"}`
	for _, c := range cases {
		b.set(func() { b.spawnErr = c.err })
		for _, path := range []string{"/spawn", "/v1/workloads"} {
			r := a.call("POST", path, body)
			if r.code != c.code {
				t.Errorf("%v: POST %s: %d %s, want %d", c.err, path, r.code, r.body, c.code)
				continue
			}
			e := r.errorBody(t)
			if e.Field != c.field || e.Code != c.ccode.String() || e.Error != c.err.Error() {
				t.Errorf("%v: POST %s: %+v, want field %q, code %s and the error's text", c.err, path, e, c.field, c.ccode)
			}
		}
		for _, p := range protocols {
			_, err := a.workloads(p, "Bearer "+testToken).Spawn(context.Background(),
				connect.NewRequest(&v1.SpawnRequest{Spec: &v1.WorkloadSpec{ImageRef: webRef}}))
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != c.ccode || ce.Message() != c.err.Error() {
				t.Errorf("%v: %s Spawn: %v, want %s with the error's text", c.err, p.name, err, c.ccode)
			}
		}
	}
}

// TestBadInputMapsAlike checks that invalid specs and ids are refused by
// connect with the same code and text as by REST, before the backend.
func TestBadInputMapsAlike(t *testing.T) {
	b := newBackend(t)
	a := newAPI(t, b)
	specs := []struct {
		rest  string
		proto *v1.WorkloadSpec
	}{
		{`{"memory":64}`, &v1.WorkloadSpec{Memory: 64}},
		{`{"image_ref":"Not A Ref!"}`, &v1.WorkloadSpec{ImageRef: "Not A Ref!"}},
		{`{"image_ref":"` + webRef + `","cores":1000}`, &v1.WorkloadSpec{ImageRef: webRef, Cores: 1000}},
		{`{"image_ref":"` + webRef + `","memory":8}`, &v1.WorkloadSpec{ImageRef: webRef, Memory: 8}},
		{`{"image_ref":"` + webRef + `","ports":{"99999":80}}`, &v1.WorkloadSpec{ImageRef: webRef, Ports: map[string]int64{"99999": 80}}},
		{`{"image_ref":"` + webRef + `","env":["=x"]}`, &v1.WorkloadSpec{ImageRef: webRef, Env: []string{"=x"}}},
		{`{"image_ref":"` + webRef + `","isolation":"kvm"}`, &v1.WorkloadSpec{ImageRef: webRef, Isolation: "kvm"}},
		{`{"image_ref":"` + webRef + `","security":{"seccomp":"off"}}`, &v1.WorkloadSpec{ImageRef: webRef, Security: &v1.Security{Seccomp: "off"}}},
	}
	for _, p := range protocols {
		c := a.workloads(p, "Bearer "+testToken)
		for _, s := range specs {
			want := a.call("POST", "/v1/workloads", s.rest).errorBody(t)
			_, err := c.Spawn(context.Background(), connect.NewRequest(&v1.SpawnRequest{Spec: s.proto}))
			sameError(t, p.name+" Spawn "+s.rest, err, want)
		}
		_, err := c.Spawn(context.Background(), connect.NewRequest(&v1.SpawnRequest{}))
		sameError(t, p.name+" Spawn without a spec", err, a.call("POST", "/v1/workloads", `{}`).errorBody(t))

		badID := a.call("GET", "/v1/workloads/nope", "").errorBody(t)
		unknown := a.call("GET", "/v1/workloads/"+unknownID, "").errorBody(t)
		for id, want := range map[string]errorBody{"nope": badID, unknownID: unknown} {
			_, err := c.Get(context.Background(), connect.NewRequest(&v1.GetRequest{Id: id}))
			sameError(t, p.name+" Get "+id, err, want)
			_, err = c.Stop(context.Background(), connect.NewRequest(&v1.StopRequest{Id: id}))
			sameError(t, p.name+" Stop "+id, err, want)
			_, err = c.Remove(context.Background(), connect.NewRequest(&v1.RemoveRequest{Id: id}))
			sameError(t, p.name+" Remove "+id, err, want)
			stream, err := c.Logs(context.Background(), connect.NewRequest(&v1.LogsRequest{Id: id}))
			if err == nil {
				for stream.Receive() {
				}
				err = stream.Err()
				stream.Close()
			}
			sameError(t, p.name+" Logs "+id, err, want)
		}
		w := b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`"}`))
		_, err = c.Stop(context.Background(), connect.NewRequest(&v1.StopRequest{Id: w.ID.String(), TimeoutSeconds: 3601}))
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.HasPrefix(errMessage(err), "timeout_seconds: ") {
			t.Errorf("%s: Stop with a timeout of 3601 s: %v, want invalid_argument on timeout_seconds", p.name, err)
		}
	}
	if n := b.spawnCount(); n != len(protocols) {
		t.Errorf("%d spawns reached the backend, want only the tests' own %d", n, len(protocols))
	}
}

// sameError fails the test unless err is the connect form of the REST
// error body want.
func sameError(t *testing.T, what string, err error, want errorBody) {
	t.Helper()
	var ce *connect.Error
	if !errors.As(err, &ce) {
		t.Errorf("%s: %v, want %s: %s", what, err, want.Code, want.Error)
		return
	}
	if ce.Code().String() != want.Code || ce.Message() != want.Error {
		t.Errorf("%s: %s %q, REST says %s %q", what, ce.Code(), ce.Message(), want.Code, want.Error)
	}
}

func errMessage(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return ""
}

// TestConnectAndRESTAgree spawns, reads, lists, stops and removes
// through each connect protocol and checks every answer against REST's
// for the same workload.
func TestConnectAndRESTAgree(t *testing.T) {
	b := newBackend(t)
	a := newAPI(t, b)
	ctx := context.Background()
	for _, p := range protocols {
		c := a.workloads(p, "Bearer "+testToken)
		res, err := c.Spawn(ctx, connect.NewRequest(&v1.SpawnRequest{Spec: &v1.WorkloadSpec{
			ImageRef: webRef, Cores: 0.5, Memory: 64, Ports: map[string]int64{"443": 3000, "tcp:80": 8080, "2222": 22},
			Env: []string{"A=b"}, Args: []string{"serve", "--fast"}, Isolation: "Container",
			Security: &v1.Security{Userns: "host"},
		}}))
		if err != nil {
			t.Fatalf("%s: Spawn: %v", p.name, err)
		}
		id := res.Msg.Id
		if res.Msg.Url != id+"."+testDomain || res.Msg.Node != testNodeName || res.Msg.Workload.GetId() != id {
			t.Errorf("%s: Spawn answered %v", p.name, res.Msg)
		}
		// The proto spec went through internal/spec like a REST body.
		want := mustSpec(t, `{"image_ref":"`+webRef+`","cores":0.5,"memory":64,"ports":{"443":3000,"tcp:80":8080,"2222":22},"env":["A=b"],"args":["serve","--fast"],"isolation":"container","security":{"userns":"host"}}`)
		if got := b.lastSpawn(t).Spec; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: backend got %+v, want %+v", p.name, got, want)
		}

		got, err := c.Get(ctx, connect.NewRequest(&v1.GetRequest{Id: id}))
		if err != nil {
			t.Fatalf("%s: Get: %v", p.name, err)
		}
		var rest workloadJSON
		a.callJSON("GET", "/v1/workloads/"+id, "", &rest)
		sameWorkload(t, p.name+" Get", got.Msg.Workload, rest)
		sameWorkload(t, p.name+" Spawn", res.Msg.Workload, rest)
		if s := got.Msg.Workload.Spec; !slices.Equal(s.Args, []string{"serve", "--fast"}) || !slices.Equal(s.Env, []string{"A=b"}) {
			t.Errorf("%s: Get spec %v lost args or env", p.name, s)
		}

		list, err := c.List(ctx, connect.NewRequest(&v1.ListRequest{}))
		if err != nil {
			t.Fatalf("%s: List: %v", p.name, err)
		}
		var restList listAnswer
		a.callJSON("GET", "/v1/workloads", "", &restList)
		if len(list.Msg.Workloads) != len(restList.Workloads) {
			t.Fatalf("%s: List has %d workloads, REST %d", p.name, len(list.Msg.Workloads), len(restList.Workloads))
		}
		for i := range restList.Workloads {
			sameWorkload(t, p.name+" List", list.Msg.Workloads[i], restList.Workloads[i])
		}

		stopped, err := c.Stop(ctx, connect.NewRequest(&v1.StopRequest{Id: id, TimeoutSeconds: 5}))
		if err != nil {
			t.Fatalf("%s: Stop: %v", p.name, err)
		}
		if b.stops[len(b.stops)-1] != 5*time.Second {
			t.Errorf("%s: Stop timeout reached the backend as %v", p.name, b.stops[len(b.stops)-1])
		}
		rest = workloadJSON{} // Unmarshal keeps fields the answer leaves out
		a.callJSON("GET", "/v1/workloads/"+id, "", &rest)
		sameWorkload(t, p.name+" Stop", stopped.Msg.Workload, rest)
		if rest.State != "stopped" {
			t.Errorf("%s: after Stop, state %q", p.name, rest.State)
		}

		if _, err := c.Remove(ctx, connect.NewRequest(&v1.RemoveRequest{Id: id})); err != nil {
			t.Fatalf("%s: Remove: %v", p.name, err)
		}
		if r := a.call("GET", "/v1/workloads/"+id, ""); r.code != http.StatusNotFound {
			t.Errorf("%s: after Remove, REST GET: %d", p.name, r.code)
		}
	}
}

// TestConnectDryRun checks that a dry run through connect names the node
// but no id or URL, and records nothing, as REST does.
func TestConnectDryRun(t *testing.T) {
	b := newBackend(t)
	a := newAPI(t, b)
	for _, p := range protocols {
		res, err := a.workloads(p, "Bearer "+testToken).Spawn(context.Background(),
			connect.NewRequest(&v1.SpawnRequest{Spec: &v1.WorkloadSpec{ImageRef: webRef}, DryRun: true}))
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		if res.Msg.Id != "" || res.Msg.Url != "" || res.Msg.Node != testNodeName || !b.lastSpawn(t).DryRun {
			t.Errorf("%s: dry run answered %v", p.name, res.Msg)
		}
	}
	if list, _ := b.List(); len(list) != 0 {
		t.Errorf("dry runs left %d records", len(list))
	}
}

// sameWorkload fails the test unless the proto and REST forms of a
// workload say the same.
func sameWorkload(t *testing.T, what string, p *v1.Workload, r workloadJSON) {
	t.Helper()
	ps := p.GetSpec()
	ports := map[string]uint16{}
	for k, v := range ps.GetPorts() {
		ports[k] = uint16(v)
	}
	if len(ports) == 0 {
		ports = nil
	}
	if p.GetId() != r.ID || p.GetUrl() != r.URL || p.GetNode() != r.Node || p.GetState() != r.State ||
		p.GetIp() != r.IP || int(p.GetPid()) != r.Pid || p.GetReady() != r.Ready || p.GetError() != r.Error ||
		p.GetImageDigest() != r.ImageDigest || !p.GetCreatedAt().AsTime().Equal(r.CreatedAt) ||
		ps.GetImageRef() != r.ImageRef || ps.GetCores() != r.Cores || ps.GetMemory() != r.Memory ||
		ps.GetIsolation() != r.Isolation || !maps.Equal(ports, r.Ports) ||
		ps.GetSecurity().GetSeccomp() != r.Security.Seccomp || ps.GetSecurity().GetUserns() != r.Security.UserNS ||
		p.GetDesired() != r.Desired || int(p.GetRestarts()) != r.Restarts || ps.GetRestart() != r.Restart ||
		(r.ExitCode != nil && int(p.GetExitCode()) != *r.ExitCode) {
		t.Errorf("%s: connect and REST disagree:\nconnect %v\n   REST %+v", what, p, r)
	}
}

// TestConnectLogsAndPull checks the two streaming calls: Logs carries the
// same bytes as REST's logs with the same options, and Pull relays
// progress and ends with the digest.
func TestConnectLogsAndPull(t *testing.T) {
	b := newBackend(t)
	a := newAPI(t, b)
	w := b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`"}`))
	for _, p := range protocols {
		c := a.workloads(p, "Bearer "+testToken)
		stream, err := c.Logs(context.Background(), connect.NewRequest(&v1.LogsRequest{Id: w.ID.String(), Follow: true, Tail: 3}))
		if err != nil {
			t.Fatalf("%s: Logs: %v", p.name, err)
		}
		var got strings.Builder
		for stream.Receive() {
			got.Write(stream.Msg().Data)
		}
		if err := stream.Err(); err != nil || got.String() != a.call("GET", "/v1/workloads/"+w.ID.String()+"/logs", "").body {
			t.Errorf("%s: Logs: %q %v, want REST's %q", p.name, got.String(), err, b.logs)
		}
		stream.Close()
		if o := b.logOpts[len(b.logOpts)-2]; o != (driver.LogOptions{Follow: true, Tail: 3}) {
			t.Errorf("%s: Logs options reached the backend as %+v", p.name, o)
		}
		badTail, err := c.Logs(context.Background(), connect.NewRequest(&v1.LogsRequest{Id: w.ID.String(), Tail: -1}))
		if err == nil {
			for badTail.Receive() {
			}
			err = badTail.Err()
			badTail.Close()
		}
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.HasPrefix(errMessage(err), "tail: ") {
			t.Errorf("%s: Logs with tail -1: %v, want invalid_argument on tail", p.name, err)
		}

		pull, err := c.Pull(context.Background(), connect.NewRequest(&v1.PullRequest{ImageRef: " " + webRef + " "}))
		if err != nil {
			t.Fatalf("%s: Pull: %v", p.name, err)
		}
		var msgs []*v1.PullResponse
		for pull.Receive() {
			msgs = append(msgs, pull.Msg())
		}
		pull.Close()
		if err := pull.Err(); err != nil || len(msgs) != 3 || msgs[1].CompleteBytes != 10 || msgs[1].Layer != "0123456789ab" ||
			!msgs[2].Done || msgs[2].Digest != "sha256:"+strings.Repeat("cd", 32) {
			t.Errorf("%s: Pull: %v %v, want two progress messages and a done one with the digest", p.name, msgs, err)
		}

		bad, err := c.Pull(context.Background(), connect.NewRequest(&v1.PullRequest{ImageRef: ""}))
		if err == nil {
			for bad.Receive() {
			}
			err = bad.Err()
			bad.Close()
		}
		if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.HasPrefix(errMessage(err), "image_ref: ") {
			t.Errorf("%s: Pull without a ref: %v, want invalid_argument on image_ref", p.name, err)
		}

		b.set(func() { b.pullErr = fmt.Errorf("pull: %w: connection refused", image.ErrRegistry) })
		down, err := c.Pull(context.Background(), connect.NewRequest(&v1.PullRequest{ImageRef: webRef}))
		if err == nil {
			for down.Receive() {
			}
			err = down.Err()
			down.Close()
		}
		b.set(func() { b.pullErr = nil })
		if connect.CodeOf(err) != connect.CodeUnavailable || errMessage(err) != "pull: registry unavailable: connection refused" {
			t.Errorf("%s: Pull from a registry that is down: %v, want unavailable with the cause", p.name, err)
		}
	}
}

// TestConnectInfo checks NodeService.Info against GET /v1/node, api_addr
// included.
func TestConnectInfo(t *testing.T) {
	a := newAPI(t, newBackend(t))
	var rest nodeinfo.Info
	a.callJSON("GET", "/v1/node", "", &rest)
	if rest.APIAddr != testAPIAddr || rest.MicroVMAccel != "tcg" {
		t.Errorf("GET /v1/node: %+v, want api_addr %s and microvm_accel tcg", rest, testAPIAddr)
	}
	for _, p := range protocols {
		res, err := a.nodes(p, "Bearer "+testToken).Info(context.Background(), connect.NewRequest(&v1.InfoRequest{}))
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		m := res.Msg
		if m.Name != rest.Name || m.Cores != rest.Cores || m.Memory != rest.MemoryMiB || m.BaseDomain != rest.BaseDomain ||
			len(m.Isolations) != len(rest.Isolations) || m.Version != "v-test" ||
			m.ApiAddr != rest.APIAddr || m.MicrovmAccel != rest.MicroVMAccel {
			t.Errorf("%s: Info %v, REST says %+v", p.name, m, rest)
		}
	}
}
