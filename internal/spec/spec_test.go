package spec

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
)

func field(t *testing.T, err error) string {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v is not a FieldError", err)
	}
	return fe.Field
}

func TestDecodeClassicSpawnBody(t *testing.T) {
	body := `{"cores": 1, "memory": 512, "image_ref": "registry.vistara.dev/75bbb1e1:ea3b", "ports": {"443": 3000}, "env": ["OPENAI_API_KEY=sk"], "dry_run": true}`
	req, err := DecodeSpawnJSON(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	s := req.Spec
	if !req.DryRun || s.Cores != 1 || s.MemoryMiB != 512 || s.Isolation != IsolationContainer {
		t.Fatalf("got %+v", req)
	}
	if len(s.Ports) != 1 || s.Ports[0] != (Port{Public: 443, Target: 3000, Proto: ProtoHTTP}) {
		t.Fatalf("ports %+v", s.Ports)
	}
}

func TestDefaultsAndPortProtocols(t *testing.T) {
	if _, err := Build(Input{Image: "busybox", Ports: map[string]int64{"80": 8080, "http:80": 2}}); err == nil {
		t.Fatal("80 and http:80 both accepted")
	}
	s, err := Build(Input{Image: "busybox", Ports: map[string]int64{"80": 8080, "5432": 5432, "tcp:443": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Cores != DefaultCores || s.MemoryMiB != DefaultMemoryMiB {
		t.Fatalf("defaults: %+v", s)
	}
	want := []Port{{80, 8080, ProtoHTTP}, {443, 1, ProtoTCP}, {5432, 5432, ProtoTCP}}
	for i, p := range want {
		if s.Ports[i] != p {
			t.Fatalf("port %d = %+v, want %+v", i, s.Ports[i], p)
		}
	}
}

func TestRejects(t *testing.T) {
	cases := map[string]struct{ body, field string }{
		"unknown field":   {`{"image_ref":"a","bogus":1}`, "bogus"},
		"trailing data":   {`{"image_ref":"a"} {}`, "body"},
		"not json":        {`nope`, "body"},
		"empty":           {``, "body"},
		"port too big":    {`{"image_ref":"a","ports":{"99999":80}}`, "ports"},
		"port zero":       {`{"image_ref":"a","ports":{"0":80}}`, "ports"},
		"target too big":  {`{"image_ref":"a","ports":{"80":70000}}`, "ports"},
		"port word":       {`{"image_ref":"a","ports":{"http":80}}`, "ports"},
		"bad proto":       {`{"image_ref":"a","ports":{"udp:53":53}}`, "ports"},
		"http odd port":   {`{"image_ref":"a","ports":{"http:8443":53}}`, "ports"},
		"float target":    {`{"image_ref":"a","ports":{"80":80.5}}`, "ports"},
		"cores zero":      {`{"image_ref":"a","cores":0}`, "cores"},
		"cores huge":      {`{"image_ref":"a","cores":1e9}`, "cores"},
		"memory small":    {`{"image_ref":"a","memory":15}`, "memory"},
		"vm memory small": {`{"image_ref":"a","memory":64,"isolation":"microvm"}`, "memory"},
		"memory huge":     {`{"image_ref":"a","memory":99999999999}`, "memory"},
		"no image":        {`{"cores":1}`, "image_ref"},
		"bad image":       {`{"image_ref":"Bad Ref"}`, "image_ref"},
		"bad env":         {`{"image_ref":"a","env":["=x"]}`, "env"},
		"nul env":         {`{"image_ref":"a","env":["A=\u0000"]}`, "env"},
		"bad isolation":   {`{"image_ref":"a","isolation":"chroot"}`, "isolation"},
		"huge":            {`{"image_ref":"a","env":["A=` + strings.Repeat("x", MaxBodyBytes) + `"]}`, "body"},
	}
	for name, c := range cases {
		_, err := DecodeSpawnJSON(strings.NewReader(c.body))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if f := field(t, err); f != c.field {
			t.Errorf("%s: field %q (%v), want %q", name, f, err, c.field)
		}
	}
}

func TestIDs(t *testing.T) {
	id := string(NewID())
	if got, err := ParseID(id); err != nil || string(got) != id {
		t.Fatal(err)
	}
	if got, err := DecodeIDJSON(strings.NewReader(`{"id":"` + id + `"}`)); err != nil || got.String() != id {
		t.Fatalf("DecodeIDJSON: %q %v, want %s", got, err, id)
	}
	if _, err := DecodeIDJSON(strings.NewReader(`{"id":"../x"}`)); err == nil || field(t, err) != "id" {
		t.Fatalf("DecodeIDJSON of a path: %v, want an error about id", err)
	}
	for _, bad := range []string{"", "../../etc/passwd", strings.ToUpper(id), id + "x", "497b6ad8-11a3-4701-8b6a-11396e11ca7d/..", "497b6ad8-11a3-1701-8b6a-11396e11ca7d"} {
		if ValidateID(bad) == nil {
			t.Errorf("ValidateID(%q) accepted", bad)
		}
	}
}

func TestParseHAC(t *testing.T) {
	s, err := ParseHAC([]byte(`
[spacecore]
name = "Test Node"
description = "Testing"

[hardware]
cores = 2
memory = 1024
kernel = "/ignored/vmlinux"
ref = "docker.io/library/alpine:latest"
provider = "firecracker"
ports = { "443" = 3000 }
`))
	if err != nil {
		t.Fatal(err)
	}
	if s.Cores != 2 || s.MemoryMiB != 1024 || s.Image != "docker.io/library/alpine:latest" || s.Isolation != IsolationMicroVM || s.Ports[0].Target != 3000 {
		t.Fatalf("got %+v", s)
	}
	if _, err := ParseHAC([]byte("[hardware]\nref = \"a\"\ncorse = 2\n")); err == nil || !strings.Contains(err.Error(), "corse") {
		t.Fatalf("typo accepted or not named: %v", err)
	}
}

func TestExecAndQueryParams(t *testing.T) {
	if ValidateExec(nil, nil) == nil {
		t.Fatal("empty command accepted")
	}
	if err := ValidateExec([]string{"sh"}, []string{"A=1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseTail("-1"); err == nil {
		t.Fatal("negative tail accepted")
	}
	if n, err := ParseTail("10"); err != nil || n != 10 {
		t.Fatal(n, err)
	}
	if _, err := ParseBool("follow", "maybe"); err == nil {
		t.Fatal("bad bool accepted")
	}
}

func TestCheckAcceptsBuiltSpecsAndRefusesTamperedOnes(t *testing.T) {
	s, err := Build(Input{Image: "busybox:1", Ports: map[string]int64{"443": 3000, "tcp:80": 8080, "5432": 5432}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("a spec Build made fails Check: %v", err)
	}
	bad := s
	bad.MemoryMiB = 1
	if err := bad.Check(); err == nil {
		t.Fatal("Check accepted 1 MiB of memory")
	}
	bad = s
	bad.Ports = []Port{{Public: 443, Target: 1, Proto: "udp"}}
	if err := bad.Check(); err == nil {
		t.Fatal("Check accepted an unknown port protocol")
	}

	// Specs Build would not have made: each names its field.
	tampered := map[string]func(*Spec){
		"an empty protocol":        func(s *Spec) { s.Ports = []Port{{Public: 8080, Target: 1}} },
		"a public port twice":      func(s *Spec) { s.Ports = []Port{{443, 1, ProtoHTTP}, {443, 2, ProtoHTTP}} },
		"a port as http and tcp":   func(s *Spec) { s.Ports = []Port{{443, 1, ProtoHTTP}, {443, 2, ProtoTCP}} },
		"ports out of order":       func(s *Spec) { s.Ports = []Port{{5432, 5432, ProtoTCP}, {443, 3000, ProtoHTTP}} },
		"http on a raw port":       func(s *Spec) { s.Ports = []Port{{8080, 1, ProtoHTTP}} },
		"cores left at 0":          func(s *Spec) { s.Cores = 0 },
		"memory left at 0":         func(s *Spec) { s.MemoryMiB = 0 },
		"no isolation":             func(s *Spec) { s.Isolation = "" },
		"an isolation in capitals": func(s *Spec) { s.Isolation = "Container" },
		"an image with blanks":     func(s *Spec) { s.Image = " busybox:1" },
		"a NUL in an argument":     func(s *Spec) { s.Args = []string{"a\x00b"} },
		"an env entry without a =": func(s *Spec) { s.Env = []string{"PATH"} },
	}
	wantField := map[string]string{
		"an empty protocol": "ports", "a public port twice": "ports", "a port as http and tcp": "ports", "ports out of order": "ports",
		"http on a raw port": "ports", "cores left at 0": "cores", "memory left at 0": "memory",
		"no isolation": "isolation", "an isolation in capitals": "isolation", "an image with blanks": "image_ref",
		"a NUL in an argument": "args", "an env entry without a =": "env",
	}
	for what, change := range tampered {
		bad := s
		change(&bad)
		err := bad.Check()
		if err == nil {
			t.Errorf("Check accepted %s: %+v", what, bad)
			continue
		}
		if f := field(t, err); f != wantField[what] {
			t.Errorf("Check of %s: %v, want it about %q", what, err, wantField[what])
		}
	}
}

// TestPortKeys checks the one port codec: it writes the keys the API
// takes, a bare number for a port served the default way and proto:number
// otherwise, and Build reads them back into the same ports.
func TestPortKeys(t *testing.T) {
	in := map[string]int64{"http:443": 3000, "tcp:80": 8080, "2222": 22, "tcp:5432": 5432}
	s, err := Build(Input{Image: "busybox:1", Ports: in})
	if err != nil {
		t.Fatal(err)
	}
	got := PortKeys(s.Ports)
	want := map[string]uint16{"443": 3000, "tcp:80": 8080, "2222": 22, "5432": 5432}
	if !maps.Equal(got, want) {
		t.Fatalf("PortKeys(%v) = %v, want %v", s.Ports, got, want)
	}
	back := make(map[string]int64, len(got))
	for k, v := range got {
		back[k] = int64(v)
	}
	again, err := Build(Input{Image: "busybox:1", Ports: back})
	if err != nil {
		t.Fatalf("Build refused PortKeys' own keys %v: %v", got, err)
	}
	if !slices.Equal(again.Ports, s.Ports) {
		t.Errorf("ports after a round trip: %v, want %v", again.Ports, s.Ports)
	}
	if m := PortKeys(nil); m == nil || len(m) != 0 {
		t.Errorf("PortKeys(nil) = %#v, want an empty map", m)
	}
}

// TestMicroVMMemoryMinimum checks that a microvm spec asking for less than
// a VM gets is refused with an error that says what to ask for, wherever
// it comes from, and that the same memory stays fine for a container.
func TestMicroVMMemoryMinimum(t *testing.T) {
	in := Input{Image: "busybox:1", MemoryMiB: MinMicroVMMemoryMiB - 1, Isolation: "microvm"}
	_, err := Build(in)
	if err == nil {
		t.Fatalf("Build accepted a microvm of %d MiB", in.MemoryMiB)
	}
	if want := "memory: must be at least 128 MiB for isolation microvm"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if _, err := ParseHAC([]byte("[hardware]\nref = \"a\"\nmemory = 64\nprovider = \"firecracker\"\n")); err == nil {
		t.Error("ParseHAC accepted a firecracker workload of 64 MiB")
	}

	in.Isolation = "container"
	s, err := Build(in)
	if err != nil {
		t.Fatalf("a container of %d MiB: %v", in.MemoryMiB, err)
	}
	s.Isolation = IsolationMicroVM
	if err := s.Check(); err == nil {
		t.Error("Check accepted a microvm below the minimum")
	}
	in.Isolation, in.MemoryMiB = "microvm", MinMicroVMMemoryMiB
	if _, err := Build(in); err != nil {
		t.Errorf("a microvm of exactly %d MiB: %v", in.MemoryMiB, err)
	}
}
