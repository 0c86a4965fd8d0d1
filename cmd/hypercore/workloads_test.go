package main

import (
	"maps"
	"reflect"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// TestSpecToProtoRoundTrips checks that a spec read from hac.toml reaches
// the API as the same spec: specToProto writes its ports with the API's
// port codec, and the node builds them back unchanged.
func TestSpecToProtoRoundTrips(t *testing.T) {
	s, err := spec.ParseHAC([]byte(`[hardware]
ref = "registry.example/web:1"
cores = 0.5
memory = 128
ports = { "443" = 3000, "tcp:80" = 8080, "2222" = 22 }
env = ["A=b"]
args = ["serve"]
`))
	if err != nil {
		t.Fatal(err)
	}
	p := specToProto(s)
	if want := map[string]int64{"443": 3000, "tcp:80": 8080, "2222": 22}; !maps.Equal(p.Ports, want) {
		t.Errorf("ports sent as %v, want %v", p.Ports, want)
	}
	back, err := spec.Build(protoInput(p))
	if err != nil {
		t.Fatalf("the API would refuse %v: %v", p, err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Errorf("the API would build %+v from %+v", back, s)
	}
}
