package spec

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
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
	// An id inside a longer string is no id: the pattern is anchored at
	// both ends.
	for _, bad := range []string{
		"", "../../etc/passwd", strings.ToUpper(id), id + "x", "x" + id, "../../" + id, id + "/..", id + "\n", "\n" + id,
		"497b6ad8-11a3-4701-8b6a-11396e11ca7d/..", "497b6ad8-11a3-1701-8b6a-11396e11ca7d",
	} {
		if ValidateID(bad) == nil {
			t.Errorf("ValidateID(%q) accepted", bad)
		}
		if got, err := ParseID(bad); err == nil || got != "" || field(t, err) != "id" {
			t.Errorf("ParseID(%q) = %q, %v; want an error about id", bad, got, err)
		}
	}
	// The error quotes the input, cut after 80 bytes.
	long := strings.Repeat("x", 81)
	if err := ValidateID(long); err == nil || !strings.Contains(err.Error(), `"`+long[:80]+`…"`) {
		t.Errorf("ValidateID of 81 bytes: %v, want the input cut to 80 bytes", err)
	}
	if err := ValidateID(long[:80]); err == nil || !strings.Contains(err.Error(), `"`+long[:80]+`"`) {
		t.Errorf("ValidateID of 80 bytes: %v, want the input whole", err)
	}
}

// imageRefOfLen returns a valid image ref of n bytes (about 200 to 600):
// a host of DNS labels, a repository and a tag each within what
// registries accept, so that only hypercore's own length limit refuses it.
func imageRefOfLen(n int) string {
	host := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + ".example"
	tag := strings.Repeat("t", 128)
	return host + "/" + strings.Repeat("r", n-len(host)-len(tag)-2) + ":" + tag
}

// TestLimitsAreExact checks every bound of Build at the bound and one step
// past it: the bound is accepted, one past it refused, naming its field.
func TestLimitsAreExact(t *testing.T) {
	entries := func(n int, f func(i int) string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	ports := func(n int) map[string]int64 {
		m := make(map[string]int64, n)
		for i := range n {
			m[fmt.Sprint(10000+i)] = 80
		}
		return m
	}
	envVar := func(i int) string { return fmt.Sprintf("V%d=x", i) }
	// One entry of exactly n bytes.
	envOf := func(n int) []string { return []string{"A=" + strings.Repeat("x", n-2)} }
	argOf := func(n int) []string { return []string{strings.Repeat("x", n)} }
	base := Input{Image: "busybox:1"}
	cases := []struct {
		name  string
		in    func(*Input)
		field string // "" when the input is valid
	}{
		{"least cores", func(in *Input) { in.Cores = MinCores }, ""},
		{"most cores", func(in *Input) { in.Cores = MaxCores }, ""},
		{"too few cores", func(in *Input) { in.Cores = MinCores / 2 }, "cores"},
		{"too many cores", func(in *Input) { in.Cores = MaxCores + 0.5 }, "cores"},
		{"negative cores", func(in *Input) { in.Cores = -1 }, "cores"},
		{"NaN cores", func(in *Input) { in.Cores = math.NaN() }, "cores"},
		{"infinite cores", func(in *Input) { in.Cores = math.Inf(1) }, "cores"},
		{"negative infinite cores", func(in *Input) { in.Cores = math.Inf(-1) }, "cores"},
		{"least memory", func(in *Input) { in.MemoryMiB = MinMemoryMiB }, ""},
		{"most memory", func(in *Input) { in.MemoryMiB = MaxMemoryMiB }, ""},
		{"too little memory", func(in *Input) { in.MemoryMiB = MinMemoryMiB - 1 }, "memory"},
		{"too much memory", func(in *Input) { in.MemoryMiB = MaxMemoryMiB + 1 }, "memory"},
		{"negative memory", func(in *Input) { in.MemoryMiB = -1 }, "memory"},
		{"longest image ref", func(in *Input) { in.Image = imageRefOfLen(512) }, ""},
		{"image ref too long", func(in *Input) { in.Image = imageRefOfLen(513) }, "image_ref"},
		{"blank image ref", func(in *Input) { in.Image = " \t" }, "image_ref"},
		{"most ports", func(in *Input) { in.Ports = ports(MaxPorts) }, ""},
		{"too many ports", func(in *Input) { in.Ports = ports(MaxPorts + 1) }, "ports"},
		{"lowest ports", func(in *Input) { in.Ports = map[string]int64{"1": 1} }, ""},
		{"highest ports", func(in *Input) { in.Ports = map[string]int64{"65535": 65535} }, ""},
		{"public port past the top", func(in *Input) { in.Ports = map[string]int64{"65536": 80} }, "ports"},
		{"workload port past the top", func(in *Input) { in.Ports = map[string]int64{"8080": 65536} }, "ports"},
		{"workload port 0", func(in *Input) { in.Ports = map[string]int64{"8080": 0} }, "ports"},
		{"negative public port", func(in *Input) { in.Ports = map[string]int64{"-80": 80} }, "ports"},
		{"most env entries", func(in *Input) { in.Env = entries(MaxEnv, envVar) }, ""},
		{"too many env entries", func(in *Input) { in.Env = entries(MaxEnv+1, envVar) }, "env"},
		{"largest env", func(in *Input) { in.Env = envOf(MaxEnvBytes) }, ""},
		{"env too large", func(in *Input) { in.Env = envOf(MaxEnvBytes + 1) }, "env"},
		{"env too large in sum", func(in *Input) { in.Env = append(envOf(MaxEnvBytes/2), envOf(MaxEnvBytes/2+1)...) }, "env"},
		{"most args", func(in *Input) { in.Args = entries(MaxArgs, func(int) string { return "a" }) }, ""},
		{"too many args", func(in *Input) { in.Args = entries(MaxArgs+1, func(int) string { return "a" }) }, "args"},
		{"largest args", func(in *Input) { in.Args = argOf(MaxArgBytes) }, ""},
		{"args too large", func(in *Input) { in.Args = argOf(MaxArgBytes + 1) }, "args"},
		{"args too large in sum", func(in *Input) { in.Args = append(argOf(MaxArgBytes/2), argOf(MaxArgBytes/2+1)...) }, "args"},
		{"NUL in an argument", func(in *Input) { in.Args = []string{"a", "b\x00"} }, "args"},
	}
	for _, c := range cases {
		in := base
		c.in(&in)
		s, err := Build(in)
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%s: %v, want it accepted", c.name, err)
		case c.field == "" && (!slices.Equal(s.Env, in.Env) || !slices.Equal(s.Args, in.Args) || len(s.Ports) != len(in.Ports)):
			t.Errorf("%s: env, args or ports not kept: %d env, %d args, %d ports", c.name, len(s.Env), len(s.Args), len(s.Ports))
		case c.field != "" && err == nil:
			t.Errorf("%s: accepted", c.name)
		case c.field != "" && field(t, err) != c.field:
			t.Errorf("%s: %v, want an error about %s", c.name, err, c.field)
		}
	}
}

// TestNaNAndInfiniteCoresFromTOML: TOML, unlike JSON, can write nan and
// inf; neither gets past Build.
func TestNaNAndInfiniteCoresFromTOML(t *testing.T) {
	for _, v := range []string{"nan", "+nan", "inf", "+inf", "-inf"} {
		_, err := ParseHAC([]byte("[hardware]\nref = \"a\"\ncores = " + v + "\n"))
		if err == nil || field(t, err) != "cores" {
			t.Errorf("cores = %s: %v, want an error about cores", v, err)
		}
	}
	s := Spec{Image: "a", Cores: math.NaN(), MemoryMiB: DefaultMemoryMiB, Isolation: IsolationContainer}
	if err := s.Check(); err == nil || field(t, err) != "cores" {
		t.Errorf("Check of NaN cores: %v", err)
	}
}

// TestBodyLimitIsExact: a body of exactly MaxBodyBytes is read, one byte
// more is refused as too large (not as broken JSON).
func TestBodyLimitIsExact(t *testing.T) {
	body := `{"image_ref":"busybox:1"}`
	body += strings.Repeat(" ", MaxBodyBytes-len(body))
	if _, err := DecodeSpawnJSON(strings.NewReader(body)); err != nil {
		t.Fatalf("a body of MaxBodyBytes: %v", err)
	}
	_, err := DecodeSpawnJSON(strings.NewReader(body + " "))
	if err == nil || field(t, err) != "body" || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a body of MaxBodyBytes+1: %v, want it refused as too large", err)
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
	if err := ValidateExec([]string{"sh"}, []string{"=1"}); err == nil || field(t, err) != "env" {
		t.Errorf("exec env without a key: %v", err)
	}
	if err := ValidateExec([]string{"sh", "\x00"}, nil); err == nil || field(t, err) != "cmd" {
		t.Errorf("exec NUL argument: %v, want an error about cmd", err)
	}
}

// TestQueryParamBounds checks the query string readers at and past their
// bounds.
func TestQueryParamBounds(t *testing.T) {
	tails := map[string]int{"": 0, "0": 0, "1": 1, "1000000": MaxLogTail}
	for in, want := range tails {
		if n, err := ParseTail(in); err != nil || n != want {
			t.Errorf("ParseTail(%q) = %d, %v; want %d", in, n, err, want)
		}
	}
	for _, in := range []string{"-1", "1000001", "x", "1.5"} {
		if _, err := ParseTail(in); err == nil || field(t, err) != "tail" {
			t.Errorf("ParseTail(%q): %v, want an error about tail", in, err)
		}
	}
	stops := map[string]time.Duration{"": 0, "0": 0, "5": 5 * time.Second, "3600": time.Hour}
	for in, want := range stops {
		if d, err := ParseStopTimeout(in); err != nil || d != want {
			t.Errorf("ParseStopTimeout(%q) = %v, %v; want %v", in, d, err, want)
		}
	}
	for _, in := range []string{"-1", "3601", "x", "1s"} {
		if _, err := ParseStopTimeout(in); err == nil || field(t, err) != "timeout" {
			t.Errorf("ParseStopTimeout(%q): %v, want an error about timeout", in, err)
		}
	}
	bools := map[string]bool{"": false, "0": false, "false": false, "no": false, "1": true, "true": true, "YES": true, "True": true}
	for in, want := range bools {
		if b, err := ParseBool("follow", in); err != nil || b != want {
			t.Errorf("ParseBool(%q) = %v, %v; want %v", in, b, err, want)
		}
	}
	if _, err := ParseBool("follow", "2"); err == nil || field(t, err) != "follow" {
		t.Errorf("ParseBool(2): %v, want an error about follow", err)
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
		"a seccomp in capitals":    func(s *Spec) { s.Security = Security{Seccomp: "Unconfined", UserNS: UserNSPrivate} },
		"an unknown seccomp":       func(s *Spec) { s.Security = Security{Seccomp: "off", UserNS: UserNSPrivate} },
		"a half-set security":      func(s *Spec) { s.Security = Security{UserNS: UserNSHost} },
	}
	wantField := map[string]string{
		"an empty protocol": "ports", "a public port twice": "ports", "a port as http and tcp": "ports", "ports out of order": "ports",
		"http on a raw port": "ports", "cores left at 0": "cores", "memory left at 0": "memory",
		"no isolation": "isolation", "an isolation in capitals": "isolation", "an image with blanks": "image_ref",
		"a NUL in an argument": "args", "an env entry without a =": "env",
		"a seccomp in capitals": "security", "an unknown seccomp": "security.seccomp", "a half-set security": "security",
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

// TestDisk checks the disk field at every front door: JSON "disk" and
// hac.toml's hardware.disk in MiB, 0 or absent meaning the node's default,
// and sizes outside MinDiskMiB-MaxDiskMiB refused naming the field.
func TestDisk(t *testing.T) {
	req, err := DecodeSpawnJSON(strings.NewReader(`{"image_ref":"web:1","disk":512}`))
	if err != nil || req.Spec.DiskMiB != 512 {
		t.Errorf("JSON disk 512: %+v, %v", req.Spec, err)
	}
	req, err = DecodeSpawnJSON(strings.NewReader(`{"image_ref":"web:1"}`))
	if err != nil || req.Spec.DiskMiB != 0 {
		t.Errorf("no disk: DiskMiB %d, %v; want 0 (the node's default)", req.Spec.DiskMiB, err)
	}
	s, err := ParseHAC([]byte("[hardware]\nref = \"web:1\"\ndisk = 2048\n"))
	if err != nil || s.DiskMiB != 2048 {
		t.Errorf("hac.toml disk 2048: %+v, %v", s, err)
	}
	for _, v := range []string{"-1", "15", "1048577"} {
		_, err := DecodeSpawnJSON(strings.NewReader(`{"image_ref":"web:1","disk":` + v + `}`))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != "disk" {
			t.Errorf("disk %s: %v; want a disk field error", v, err)
		}
	}
	for _, v := range []int64{MinDiskMiB, MaxDiskMiB} {
		if _, err := Build(Input{Image: "web:1", DiskMiB: v}); err != nil {
			t.Errorf("disk %d: %v", v, err)
		}
	}
	built, _ := Build(Input{Image: "web:1", DiskMiB: 100})
	if err := built.Check(); err != nil {
		t.Errorf("Check of a built spec with a disk: %v", err)
	}
	built.DiskMiB = 1
	if err := built.Check(); err == nil {
		t.Error("Check accepted disk 1 MiB")
	}
}

func TestSecurity(t *testing.T) {
	s, err := Build(Input{Image: "busybox"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Security != (Security{Seccomp: SeccompDefault, UserNS: UserNSPrivate}) {
		t.Fatalf("default security %+v, want seccomp default and a private user namespace", s.Security)
	}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	// A spec from a node that predates Security means the defaults.
	old := s
	old.Security = Security{}
	if err := old.Check(); err != nil {
		t.Fatalf("Check refused a spec without security: %v", err)
	}

	req, err := DecodeSpawnJSON(strings.NewReader(`{"image_ref": "busybox", "security": {"seccomp": "unconfined", "userns": "host"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Security{Seccomp: SeccompUnconfined, UserNS: UserNSHost}); req.Spec.Security != want {
		t.Fatalf("JSON security %+v, want %+v", req.Spec.Security, want)
	}
	if err := req.Spec.Check(); err != nil {
		t.Fatal(err)
	}
	for body, f := range map[string]string{
		`{"image_ref": "busybox", "security": {"seccomp": "off"}}`: "security.seccomp",
		`{"image_ref": "busybox", "security": {"userns": "root"}}`: "security.userns",
		`{"image_ref": "busybox", "security": {"apparmor": "x"}}`:  "apparmor",
		`{"image_ref": "busybox", "security": "unconfined"}`:       "security",
	} {
		if _, err := DecodeSpawnJSON(strings.NewReader(body)); err == nil || field(t, err) != f {
			t.Errorf("%s: %v, want an error about %s", body, err, f)
		}
	}

	h, err := ParseHAC([]byte("[hardware]\nref = \"busybox\"\n[security]\nseccomp = \"unconfined\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := (Security{Seccomp: SeccompUnconfined, UserNS: UserNSPrivate}); h.Security != want {
		t.Fatalf("hac.toml security %+v, want %+v", h.Security, want)
	}

	o, err := ParseSecurityOpts([]string{"userns=host"})
	if err != nil || o != (Security{Seccomp: SeccompDefault, UserNS: UserNSHost}) {
		t.Fatalf("--security-opt userns=host: %+v, %v", o, err)
	}
	for _, bad := range []string{"seccomp", "seccomp=none", "apparmor=x"} {
		if _, err := ParseSecurityOpts([]string{bad}); err == nil {
			t.Errorf("--security-opt %s accepted", bad)
		}
	}
}
