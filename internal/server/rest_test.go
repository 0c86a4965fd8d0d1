package server

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/nodeinfo"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

const webRef = "registry.example/web:1"

// badSpawns are spawn bodies that internal/spec refuses, with the field
// the 400 answer must name.
var badSpawns = []struct {
	name, body, field string
}{
	{"not JSON", `{"image_ref":`, "body"},
	{"empty body", ``, "body"},
	{"an array", `[]`, "body"},
	{"trailing data", `{"image_ref":"` + webRef + `"} {}`, "body"},
	{"unknown field", `{"image_ref":"` + webRef + `","memroy":64}`, "memroy"},
	{"wrong type", `{"image_ref":"` + webRef + `","memory":"lots"}`, "memory"},
	{"no image", `{"memory":64}`, "image_ref"},
	{"bad image", `{"image_ref":"Not A Ref!"}`, "image_ref"},
	{"zero cores", `{"image_ref":"` + webRef + `","cores":0}`, "cores"},
	{"too many cores", `{"image_ref":"` + webRef + `","cores":1000}`, "cores"},
	{"zero memory", `{"image_ref":"` + webRef + `","memory":0}`, "memory"},
	{"too little memory", `{"image_ref":"` + webRef + `","memory":8}`, "memory"},
	{"public port too high", `{"image_ref":"` + webRef + `","ports":{"99999":80}}`, "ports"},
	{"target port zero", `{"image_ref":"` + webRef + `","ports":{"443":0}}`, "ports"},
	{"http on a raw port", `{"image_ref":"` + webRef + `","ports":{"http:8080":80}}`, "ports"},
	{"port twice", `{"image_ref":"` + webRef + `","ports":{"443":80,"http:443":81}}`, "ports"},
	{"bad env", `{"image_ref":"` + webRef + `","env":["=x"]}`, "env"},
	{"NUL in an arg", `{"image_ref":"` + webRef + `","args":["a\u0000b"]}`, "args"},
	{"bad isolation", `{"image_ref":"` + webRef + `","isolation":"kvm"}`, "isolation"},
	{"over 1 MiB", `{"image_ref":"` + webRef + `","env":["A=` + strings.Repeat("x", spec.MaxBodyBytes) + `"]}`, "body"},
}

// TestSpawnRefusesBadInput checks that /spawn and POST /v1/workloads
// answer 400 naming the bad field for each kind of bad body, and that
// nothing reaches the backend.
func TestSpawnRefusesBadInput(t *testing.T) {
	a := newAPI(t, newBackend(t))
	for _, path := range []string{"/spawn", "/v1/workloads"} {
		for _, c := range badSpawns {
			r := a.call("POST", path, c.body)
			if r.code != http.StatusBadRequest {
				t.Errorf("%s %s: %d %.200s, want 400", path, c.name, r.code, r.body)
				continue
			}
			e := r.errorBody(t)
			if e.Field != c.field || e.Code != "invalid_argument" || !strings.HasPrefix(e.Error, c.field+": ") {
				t.Errorf("%s %s: %+v, want field %q, code invalid_argument and a message starting with the field", path, c.name, e, c.field)
			}
		}
	}
	if n := a.b.spawnCount(); n != 0 {
		t.Errorf("%d bad spawns reached the backend", n)
	}
	if list, _ := a.b.List(); len(list) != 0 {
		t.Errorf("bad spawns left %d records", len(list))
	}
}

// TestSpawnClassicAPI checks the classic POST /spawn: the body's fields
// reach the backend as a validated spec, and the answer is
// {"id","url","node"}.
func TestSpawnClassicAPI(t *testing.T) {
	a := newAPI(t, newBackend(t))
	var ans map[string]any
	a.callJSON("POST", "/spawn", `{"cores":0.5,"memory":64,"image_ref":"`+webRef+`","ports":{"443":3000,"5432":5432},"env":["GREETING=hi"]}`, &ans)
	id, _ := ans["id"].(string)
	if err := spec.ValidateID(id); err != nil {
		t.Fatalf("answer %v: %v", ans, err)
	}
	want := map[string]any{"id": id, "url": id + "." + testDomain, "node": testNodeName}
	if !reflect.DeepEqual(ans, want) {
		t.Errorf("answer %v, want exactly %v", ans, want)
	}
	got := a.b.lastSpawn(t)
	wantSpec := spec.Spec{
		Image: webRef, Cores: 0.5, MemoryMiB: 64, Env: []string{"GREETING=hi"}, Isolation: spec.IsolationContainer,
		Ports:    []spec.Port{{Public: 443, Target: 3000, Proto: spec.ProtoHTTP}, {Public: 5432, Target: 5432, Proto: spec.ProtoTCP}},
		Security: spec.Security{Seccomp: spec.SeccompDefault, UserNS: spec.UserNSPrivate},
	}
	if got.DryRun || !reflect.DeepEqual(got.Spec, wantSpec) {
		t.Errorf("backend got %+v, want %+v", got, spec.SpawnRequest{Spec: wantSpec})
	}

	// Left out, cores, memory and isolation take their defaults.
	a.callJSON("POST", "/v1/workloads", `{"image_ref":"`+webRef+`"}`, &ans)
	got = a.b.lastSpawn(t)
	if got.Spec.Cores != spec.DefaultCores || got.Spec.MemoryMiB != spec.DefaultMemoryMiB || got.Spec.Isolation != spec.IsolationContainer {
		t.Errorf("defaults: backend got %+v", got.Spec)
	}

	// The sandbox's opt-outs reach the backend.
	a.callJSON("POST", "/spawn", `{"image_ref":"`+webRef+`","security":{"seccomp":"unconfined","userns":"host"}}`, &ans)
	if got := a.b.lastSpawn(t).Spec.Security; got != (spec.Security{Seccomp: spec.SeccompUnconfined, UserNS: spec.UserNSHost}) {
		t.Errorf("security: backend got %+v", got)
	}
}

// TestSpawnDryRun checks that a dry run is passed on, answered with the
// node it would go to and no id or URL, and leaves no record.
func TestSpawnDryRun(t *testing.T) {
	a := newAPI(t, newBackend(t))
	var ans map[string]any
	a.callJSON("POST", "/spawn", `{"image_ref":"`+webRef+`","dry_run":true}`, &ans)
	want := map[string]any{"id": "", "url": "", "node": testNodeName, "dry_run": true}
	if !reflect.DeepEqual(ans, want) {
		t.Errorf("dry run answer %v, want %v", ans, want)
	}
	if !a.b.lastSpawn(t).DryRun {
		t.Error("the backend was not told it is a dry run")
	}
	if list, _ := a.b.List(); len(list) != 0 {
		t.Errorf("a dry run left %d records", len(list))
	}
}

// TestWorkloadJSON checks every field of a workload as GET
// /v1/workloads/{id}, GET /v1/workloads and GET /list show it, ports
// included in the form the request used.
func TestWorkloadJSON(t *testing.T) {
	a := newAPI(t, newBackend(t))
	w := a.b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`","cores":2,"memory":128,"ports":{"443":3000,"tcp:80":8080,"2222":22}}`))
	id := w.ID.String()
	var one map[string]any
	a.callJSON("GET", "/v1/workloads/"+id, "", &one)
	want := map[string]any{
		"id": id, "url": id + "." + testDomain, "node": testNodeName, "state": "running", "desired": "running",
		"ready": true, "ip": "10.77.0.2", "pid": 4242.0, "image_ref": webRef, "image_digest": w.Observed.ImageDigest,
		"cores": 2.0, "memory": 128.0, "isolation": "container", "created_at": w.CreatedAt.Format(time.RFC3339), "restarts": 0.0,
		"ports":    map[string]any{"443": 3000.0, "tcp:80": 8080.0, "2222": 22.0},
		"security": map[string]any{"seccomp": "default", "userns": "private"},
	}
	if !reflect.DeepEqual(one, want) {
		t.Errorf("GET /v1/workloads/{id}:\n got %v\nwant %v", one, want)
	}
	for _, path := range []string{"/list", "/v1/workloads"} {
		var list struct{ Workloads []map[string]any }
		a.callJSON("GET", path, "", &list)
		if len(list.Workloads) != 1 || !reflect.DeepEqual(list.Workloads[0], want) {
			t.Errorf("GET %s: %v, want [%v]", path, list.Workloads, want)
		}
	}
}

// TestWorkloadShowsItsNodesObservation checks that the state, address and
// exit code shown are what the allocated node reported: an exited
// workload shows its exit code, and one moved to another node by a
// failover is pending there, with nothing of what its old node saw.
func TestWorkloadShowsItsNodesObservation(t *testing.T) {
	a := newAPI(t, newBackend(t))
	exited := a.b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`"}`))
	moved := a.b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`"}`))
	a.b.set(func() {
		o := a.b.observed[exited.ID]
		o.State, o.ExitCode, o.IP, o.Pid, o.Ready, o.Error = workload.StateExited, 3, "", 0, false, "exited with code 3"
		a.b.observed[exited.ID] = o
		m := a.b.allocs[moved.ID]
		m.Node, m.Generation = "other-node", m.Generation+1
		a.b.allocs[moved.ID] = m
	})
	var got workloadJSON
	a.callJSON("GET", "/v1/workloads/"+exited.ID.String(), "", &got)
	if got.State != "exited" || got.Desired != "running" || got.ExitCode == nil || *got.ExitCode != 3 || got.Error != "exited with code 3" || got.IP != "" || got.Ready {
		t.Errorf("exited workload: %+v, want state exited, exit code 3 and its error", got)
	}
	got = workloadJSON{}
	a.callJSON("GET", "/v1/workloads/"+moved.ID.String(), "", &got)
	if got.Node != "other-node" || got.State != "pending" || got.IP != "" || got.Pid != 0 || got.Ready || got.ImageDigest != "" {
		t.Errorf("moved workload: %+v, want pending on other-node with nothing its old node saw", got)
	}
	res, err := a.workloads(protocols[0], "Bearer "+testToken).Get(context.Background(), connect.NewRequest(&v1.GetRequest{Id: moved.ID.String()}))
	if err != nil {
		t.Fatal(err)
	}
	sameWorkload(t, "connect Get of the moved workload", res.Msg.Workload, got)
	res, err = a.workloads(protocols[0], "Bearer "+testToken).Get(context.Background(), connect.NewRequest(&v1.GetRequest{Id: exited.ID.String()}))
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Msg.Workload; p.GetExitCode() != 3 || p.GetDesired() != "running" {
		t.Errorf("connect Get of the exited workload: %v, want exit_code 3 and desired running", p)
	}
}

// TestStartRunsAStoppedWorkloadAgain checks POST /v1/workloads/{id}/start
// and Connect's Start: a stopped workload is desired running again, and
// an exit code of 0 is shown (it is not left out as a zero value).
func TestStartRunsAStoppedWorkloadAgain(t *testing.T) {
	a := newAPI(t, newBackend(t))
	w := a.b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`","restart":"on-failure:3"}`))
	a.b.set(func() {
		o := a.b.observed[w.ID]
		o.State, o.ExitCode, o.Restarts = workload.StateExited, 0, 3
		a.b.observed[w.ID] = o
	})
	if r := a.call("GET", "/v1/workloads/"+w.ID.String(), ""); !strings.Contains(r.body, `"exit_code": 0`) || !strings.Contains(r.body, `"restarts": 3`) || !strings.Contains(r.body, `"restart": "on-failure:3"`) {
		t.Errorf("exited with 0 after 3 restarts: %s, want exit_code 0, restarts 3 and the policy", r.body)
	}
	a.call("POST", "/v1/workloads/"+w.ID.String()+"/stop", "")
	var got workloadJSON
	a.callJSON("POST", "/v1/workloads/"+w.ID.String()+"/start", "", &got)
	if got.Desired != "running" || got.State != "running" || got.ExitCode != nil || got.Restarts != 0 {
		t.Errorf("after start: %+v, want desired and state running, no exit code, no restarts", got)
	}
	a.call("POST", "/v1/workloads/"+w.ID.String()+"/stop", "")
	res, err := a.workloads(protocols[0], "Bearer "+testToken).Start(context.Background(), connect.NewRequest(&v1.StartRequest{Id: w.ID.String()}))
	if err != nil || res.Msg.Workload.GetDesired() != "running" {
		t.Fatalf("connect Start: %v %v", res, err)
	}
	if r := a.call("POST", "/v1/workloads/not-an-id/start", ""); r.code != http.StatusBadRequest {
		t.Errorf("start of a bad id: %d %s, want 400", r.code, r.body)
	}
}

// TestListEmpty checks that an empty list is [] rather than null, which
// clients of the classic API iterate over.
func TestListEmpty(t *testing.T) {
	a := newAPI(t, newBackend(t))
	for _, path := range []string{"/list", "/v1/workloads"} {
		if r := a.call("GET", path, ""); r.code != http.StatusOK || !strings.Contains(r.body, `"workloads": []`) {
			t.Errorf("GET %s: %d %s, want an empty array", path, r.code, r.body)
		}
	}
}

// TestStopAndRemove checks the stop routes (classic and REST) with their
// timeout, and DELETE.
func TestStopAndRemove(t *testing.T) {
	a := newAPI(t, newBackend(t))
	w := a.b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`"}`))
	id := w.ID.String()
	var got workloadJSON
	a.callJSON("POST", "/stop", `{"id":"`+id+`"}`, &got)
	if got.ID != id || got.State != "stopped" || got.Desired != "stopped" || got.IP != "" {
		t.Errorf("POST /stop: %+v, want it stopped", got)
	}
	a.callJSON("POST", "/v1/workloads/"+id+"/stop?timeout=7", "", &got)
	a.callJSON("POST", "/stop?timeout=3600", `{"id":"`+id+`"}`, &got)
	if want := []time.Duration{0, 7 * time.Second, time.Hour}; !reflect.DeepEqual(a.b.stops, want) {
		t.Errorf("stop timeouts reaching the backend: %v, want %v", a.b.stops, want)
	}
	var removed map[string]string
	a.callJSON("DELETE", "/v1/workloads/"+id, "", &removed)
	if want := map[string]string{"id": id, "state": "removed"}; !reflect.DeepEqual(removed, want) {
		t.Errorf("DELETE: %v, want %v", removed, want)
	}
	if r := a.call("GET", "/v1/workloads/"+id, ""); r.code != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d %s, want 404", r.code, r.body)
	}
}

// TestLogs checks both log routes: the text, its content type, and the
// follow and tail options reaching the backend.
func TestLogs(t *testing.T) {
	a := newAPI(t, newBackend(t))
	w := a.b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`"}`))
	id := w.ID.String()
	for _, path := range []string{"/logs?id=" + id + "&follow=1&tail=5", "/v1/workloads/" + id + "/logs?follow=true&tail=5"} {
		r := a.call("GET", path, "")
		if r.code != http.StatusOK || r.body != a.b.logs || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
			t.Errorf("GET %s: %d %q (%s), want the log as text", path, r.code, r.body, r.header.Get("Content-Type"))
		}
	}
	want := []driver.LogOptions{{Follow: true, Tail: 5}, {Follow: true, Tail: 5}}
	if !reflect.DeepEqual(a.b.logOpts, want) {
		t.Errorf("log options reaching the backend: %+v, want %+v", a.b.logOpts, want)
	}
}

// TestRouteErrors checks each route's answer to a malformed id, an
// unknown workload, bad query values and the wrong method.
func TestRouteErrors(t *testing.T) {
	a := newAPI(t, newBackend(t))
	w := a.b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`"}`))
	id := w.ID.String()
	cases := []struct {
		method, path, body string
		code               int
		field              string
	}{
		// A malformed id is refused before it reaches the backend.
		{"GET", "/v1/workloads/not-an-id", "", 400, "id"},
		{"GET", "/v1/workloads/" + strings.ToUpper(id), "", 400, "id"},
		{"DELETE", "/v1/workloads/..%2F..%2Fetc", "", 400, "id"},
		{"POST", "/v1/workloads/x/stop", "", 400, "id"},
		{"GET", "/v1/workloads/x/logs", "", 400, "id"},
		{"POST", "/v1/workloads/x/exec?cmd=sh", "", 400, "id"},
		{"POST", "/v1/workloads/x/attach", "", 400, "id"},
		{"POST", "/stop", `{"id":"../x"}`, 400, "id"},
		{"POST", "/stop", `{}`, 400, "id"},
		{"POST", "/stop", `{"id":"` + id + `","force":true}`, 400, "force"},
		{"GET", "/logs", "", 400, "id"},
		// A well-formed id of no workload is 404 everywhere.
		{"GET", "/v1/workloads/" + unknownID, "", 404, ""},
		{"DELETE", "/v1/workloads/" + unknownID, "", 404, ""},
		{"POST", "/v1/workloads/" + unknownID + "/stop", "", 404, ""},
		{"GET", "/v1/workloads/" + unknownID + "/logs", "", 404, ""},
		{"POST", "/v1/workloads/" + unknownID + "/exec?cmd=sh", "", 404, ""},
		{"POST", "/v1/workloads/" + unknownID + "/attach", "", 404, ""},
		{"POST", "/stop", `{"id":"` + unknownID + `"}`, 404, ""},
		{"GET", "/logs?id=" + unknownID, "", 404, ""},
		// Bad query values name their parameter.
		{"POST", "/v1/workloads/" + id + "/stop?timeout=soon", "", 400, "timeout"},
		{"POST", "/v1/workloads/" + id + "/stop?timeout=3601", "", 400, "timeout"},
		{"POST", "/stop?timeout=-1", `{"id":"` + id + `"}`, 400, "timeout"},
		{"GET", "/v1/workloads/" + id + "/logs?tail=-1", "", 400, "tail"},
		{"GET", "/logs?id=" + id + "&follow=maybe", "", 400, "follow"},
		{"POST", "/v1/workloads/" + id + "/exec", "", 400, "cmd"},
		{"POST", "/v1/workloads/" + id + "/exec?cmd=sh&tty=2", "", 400, "tty"},
		{"POST", "/v1/workloads/" + id + "/exec?cmd=sh&env=1=2", "", 400, "env"},
		// The classic routes check their method.
		{"GET", "/spawn", "", 405, ""},
		{"GET", "/stop", "", 405, ""},
		{"POST", "/list", "", 405, ""},
		{"POST", "/logs?id=" + id, "", 405, ""},
		// Anything else gets the catch-all's JSON 404 naming the route,
		// not the mux's plain-text answer.
		{"GET", "/no/such/route", "", 404, ""},
		{"PUT", "/v1/workloads/" + id, "", 404, ""},
		// Exec and attach need the stream upgrade.
		{"POST", "/v1/workloads/" + id + "/exec?cmd=sh", "", 426, ""},
		{"POST", "/v1/workloads/" + id + "/attach", "", 426, ""},
	}
	for _, c := range cases {
		r := a.call(c.method, c.path, c.body)
		if r.code != c.code {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, r.code, r.body, c.code)
			continue
		}
		e := r.errorBody(t)
		if e.Field != c.field {
			t.Errorf("%s %s: field %q, want %q", c.method, c.path, e.Field, c.field)
		}
		if want := connectCodeOf(c.code).String(); e.Code != want {
			t.Errorf("%s %s: code %q, want %q", c.method, c.path, e.Code, want)
		}
		if c.code == 405 && r.header.Get("Allow") == "" {
			t.Errorf("%s %s: 405 without Allow", c.method, c.path)
		}
	}
	// None of the refused calls stopped the workload or ran anything in it.
	if got, err := a.b.Get(w.ID); err != nil || got.Observed.State != workload.StateRunning || len(a.b.execs) != 0 {
		t.Errorf("after refused calls: %+v %v, %d execs", got, err, len(a.b.execs))
	}
	// Every id that reached the backend went through spec.ParseID: the
	// malformed ones above were refused at the edge.
	for _, got := range a.b.reached() {
		if _, err := spec.ParseID(string(got)); err != nil {
			t.Errorf("a malformed id reached the backend: %v", err)
		}
	}
}

// TestNodeRoutes checks GET /v1/node, and GET /v1/nodes on a node alone
// and on a member of a cluster.
func TestNodeRoutes(t *testing.T) {
	b := newBackend(t)
	a := newAPI(t, b)
	var info map[string]any
	a.callJSON("GET", "/v1/node", "", &info)
	if info["name"] != testNodeName || info["base_domain"] != testDomain || info["cores"].(float64) <= 0 {
		t.Errorf("GET /v1/node: %v", info)
	}
	// Its keys are snake_case like the rest of the API, every one there
	// (docs/api.md lists them), api_addr filled in.
	want := map[string]any{
		"name": testNodeName, "cores": 4.0, "memory_mib": 8192.0, "isolations": []any{"container", "microvm"},
		"base_domain": testDomain, "free_memory_mib": 6000.0, "microvm_accel": "tcg", "api_addr": testAPIAddr,
	}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("GET /v1/node:\n got %v\nwant %v", info, want)
	}
	if r := a.call("GET", "/v1/nodes", ""); r.code != http.StatusNotFound || !strings.Contains(r.errorBody(t).Error, "not part of a cluster") {
		t.Errorf("GET /v1/nodes alone: %d %s, want 404", r.code, r.body)
	}

	members := []nodeinfo.Member{{Name: "a", State: "alive", Role: "server", Leader: true, Cores: 2, Isolations: []string{"container"}, Workloads: 1}, {Name: "b", State: "failed", Role: "worker"}}
	ca := newAPI(t, clusterBackend{b, members})
	var got struct{ Nodes []nodeinfo.Member }
	ca.callJSON("GET", "/v1/nodes", "", &got)
	if !reflect.DeepEqual(got.Nodes, members) {
		t.Errorf("GET /v1/nodes: %+v, want %+v", got.Nodes, members)
	}
	var raw map[string][]map[string]any
	ca.callJSON("GET", "/v1/nodes", "", &raw)
	for _, key := range []string{"name", "state", "role", "leader", "addr", "public", "cores", "memory_mib", "free_memory_mib", "workloads"} {
		if _, ok := raw["nodes"][0][key]; !ok {
			t.Errorf("GET /v1/nodes: member %v lacks %q (docs/api.md lists it)", raw["nodes"][0], key)
		}
	}
}

// TestErrorBodyIsConnectShaped checks the keys of an error body: the
// classic API's "error", Connect's "code" and "message", and "field" only when
// the error is about one.
func TestErrorBodyIsConnectShaped(t *testing.T) {
	a := newAPI(t, newBackend(t))
	r := a.call("GET", "/v1/workloads/"+unknownID, "")
	var raw map[string]any
	if err := json.Unmarshal([]byte(r.body), &raw); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"error", "code", "message"} {
		if _, ok := raw[key]; !ok {
			t.Errorf("error body %s lacks %q", r.body, key)
		}
	}
	if _, ok := raw["field"]; ok {
		t.Errorf("error body %s has a field for an error about no field", r.body)
	}
}
