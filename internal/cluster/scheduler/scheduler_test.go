package scheduler

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

var container = []spec.Isolation{spec.IsolationContainer}

func node(name string, public bool, usedMem int64) Node {
	return Node{Name: name, Alive: true, Public: public, Isolations: container, Cores: 4, MemoryMiB: 4096, UsedMemoryMiB: usedMem}
}

func req(mem int64, ports ...spec.Port) spec.Spec {
	return spec.Spec{Image: "x", Cores: 1, MemoryMiB: mem, Isolation: spec.IsolationContainer, Ports: ports}
}

func names(c []Candidate) string {
	var s []string
	for _, x := range c {
		s = append(s, x.Name)
	}
	return strings.Join(s, ",")
}

func TestStrategiesOrderByLoad(t *testing.T) {
	nodes := []Node{node("empty", true, 0), node("half", true, 2048), node("full", true, 4000)}
	got, err := Rank(nodes, req(128), BinPack)
	if err != nil || names(got) != "half,empty" {
		t.Fatalf("binpack: %s %v, want half,empty (full cannot fit 128 MiB)", names(got), err)
	}
	got, _ = Rank(nodes, req(128), Spread)
	if names(got) != "empty,half" {
		t.Fatalf("spread: %s, want empty,half", names(got))
	}
}

func TestTiesBreakByName(t *testing.T) {
	got, _ := Rank([]Node{node("b", true, 0), node("a", true, 0), node("c", true, 0)}, req(64), BinPack)
	if names(got) != "a,b,c" {
		t.Fatalf("got %s", names(got))
	}
}

func TestFilters(t *testing.T) {
	dead := node("dead", true, 0)
	dead.Alive = false
	vmOnly := node("vm", true, 0)
	vmOnly.Isolations = []spec.Isolation{spec.IsolationMicroVM}
	private := node("private", false, 0)
	taken := node("taken", true, 0)
	taken.TakenPorts = map[uint16]bool{5432: true}
	ranged := node("ranged", true, 0)
	ranged.PortMin, ranged.PortMax = 30000, 32767
	ok := node("ok", true, 0)
	nodes := []Node{dead, vmOnly, private, taken, ranged, ok}

	tcp := spec.Port{Public: 5432, Target: 5432, Proto: spec.ProtoTCP}
	got, err := Rank(nodes, req(64, tcp), BinPack)
	if err != nil || names(got) != "ok" {
		t.Fatalf("got %s %v, want only ok", names(got), err)
	}
	// Without ports, private and port-limited nodes qualify too.
	got, _ = Rank(nodes, req(64), BinPack)
	if names(got) != "ok,private,ranged,taken" {
		t.Fatalf("no ports: got %s", names(got))
	}
	// An HTTP port needs a public node but no free TCP port.
	http := spec.Port{Public: 443, Target: 3000, Proto: spec.ProtoHTTP}
	got, _ = Rank(nodes, req(64, http), BinPack)
	if names(got) != "ok,ranged,taken" {
		t.Fatalf("http port: got %s", names(got))
	}
}

func TestNoFitSaysWhy(t *testing.T) {
	small := node("small", true, 4000)
	_, err := Rank([]Node{small, node("p", false, 0)}, req(512, spec.Port{Public: 80, Target: 80, Proto: spec.ProtoHTTP}), BinPack)
	if !errors.Is(err, ErrNoFit) || !strings.Contains(err.Error(), "1 have too little free memory") || !strings.Contains(err.Error(), "1 are private") {
		t.Fatalf("got %v", err)
	}
	if _, err := Rank(nil, req(1), BinPack); !errors.Is(err, ErrNoFit) {
		t.Fatalf("empty cluster: %v", err)
	}
	big := req(64)
	big.Cores = 64
	if _, err := Rank([]Node{node("n", true, 0)}, big, Spread); err == nil || !strings.Contains(err.Error(), "fewer cores") {
		t.Fatalf("cores: %v", err)
	}
}

func TestParseStrategy(t *testing.T) {
	if s, err := ParseStrategy("spread"); err != nil || s != Spread {
		t.Fatal(s, err)
	}
	if _, err := ParseStrategy("random"); err == nil {
		t.Fatal("accepted an unknown strategy")
	}
}

// simulated returns n nodes of varied size, load, role and ports.
func simulated(n int) []Node {
	nodes := make([]Node, n)
	for i := range nodes {
		nodes[i] = Node{
			Name: fmt.Sprintf("node-%04d", i), Alive: i%50 != 0, Public: i%3 != 0,
			Isolations: container, Cores: float64(2 + i%14), MemoryMiB: int64(2048 * (1 + i%8)),
			UsedMemoryMiB: int64((i * 97) % 2048), UsedCores: float64(i % 3),
			TakenPorts: map[uint16]bool{uint16(5000 + i%10): true},
		}
	}
	return nodes
}

// BenchmarkRank1000 is one placement decision over 1,000 simulated nodes;
// bench/README.md reports it as placements per second.
func BenchmarkRank1000(b *testing.B) {
	nodes := simulated(1000)
	s := req(512, spec.Port{Public: 443, Target: 3000, Proto: spec.ProtoHTTP}, spec.Port{Public: 5003, Target: 5432, Proto: spec.ProtoTCP})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Rank(nodes, s, BinPack); err != nil {
			b.Fatal(err)
		}
	}
}
