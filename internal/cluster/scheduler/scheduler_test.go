package scheduler

import (
	"errors"
	"fmt"
	"math"
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
	if !errors.Is(err, ErrNoFit) || !strings.Contains(err.Error(), "1 have too little memory left to reserve") || !strings.Contains(err.Error(), "1 are private") {
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

// TestPortRangeIsInclusive: a node with a port range takes a TCP port at
// either end of it and refuses one just outside either end; a node with
// no range takes any port.
func TestPortRangeIsInclusive(t *testing.T) {
	ranged := node("ranged", true, 0)
	ranged.PortMin, ranged.PortMax = 30000, 32767
	open := node("open", true, 0)
	for port, want := range map[uint16]string{
		1: "open", 29999: "open", 30000: "open,ranged", 31000: "open,ranged", 32767: "open,ranged", 32768: "open", 40000: "open", 65535: "open",
	} {
		got, err := Rank([]Node{ranged, open}, req(64, spec.Port{Public: port, Target: 80, Proto: spec.ProtoTCP}), BinPack)
		if err != nil || names(got) != want {
			t.Errorf("TCP port %d: %s %v, want %s", port, names(got), err, want)
		}
	}
	_, err := Rank([]Node{ranged}, req(64, spec.Port{Public: 32768, Target: 80, Proto: spec.ProtoTCP}), BinPack)
	if !errors.Is(err, ErrNoFit) || !strings.Contains(err.Error(), "1 allow no requested TCP port (it is outside their --port-range") {
		t.Errorf("port above the range: %v", err)
	}
}

// TestCoresAreNotOvercommitted: a workload may ask for all of a node's
// cores, and not a fraction more; cores already used there do not count
// against it (they are weighed, not reserved).
func TestCoresAreNotOvercommitted(t *testing.T) {
	n := node("n", true, 0)
	n.UsedCores = 3
	for _, c := range []struct {
		cores float64
		fits  bool
	}{{0.01, true}, {4, true}, {4.01, false}, {5, false}, {8, false}} {
		s := req(64)
		s.Cores = c.cores
		_, err := Rank([]Node{n}, s, BinPack)
		if c.fits != (err == nil) {
			t.Errorf("%v cores on a 4-core node: %v, want fits=%v", c.cores, err, c.fits)
		}
		if !c.fits && !strings.Contains(fmt.Sprint(err), "1 have fewer cores") {
			t.Errorf("%v cores: %v, want it to say the node has fewer cores", c.cores, err)
		}
	}
}

// TestMemoryIsReserved: a workload fits in exactly the memory a node has
// free (its memory less what placed workloads reserve), and not in one MiB
// more.
func TestMemoryIsReserved(t *testing.T) {
	n := node("n", true, 1024)
	if got, err := Rank([]Node{n}, req(3072), BinPack); err != nil || names(got) != "n" {
		t.Errorf("3072 MiB with 3072 free: %s %v", names(got), err)
	}
	if _, err := Rank([]Node{n}, req(3073), BinPack); err == nil || !strings.Contains(err.Error(), "1 have too little memory left to reserve") || !strings.Contains(err.Error(), "raise --memory") {
		t.Errorf("3073 MiB with 3072 free: %v, want it refused for memory", err)
	}
}

// TestScoreIsLoadAfterPlacing checks the score itself: half the memory
// share and half the core share (capped at 1) the node would have with the
// workload placed, for binpack, and one less that for spread.
func TestScoreIsLoadAfterPlacing(t *testing.T) {
	s := req(512) // 1 core, 512 MiB
	for _, c := range []struct {
		name      string
		usedMem   int64
		usedCores float64
		want      float64 // binpack score
	}{
		{"empty", 0, 0, 0.5*512/4096 + 0.5*1.0/4},
		{"memory and cores in use", 1024, 2, 0.5*1536/4096 + 0.5*3.0/4},
		{"cores overcommitted", 0, 6, 0.5*512/4096 + 0.5},
	} {
		n := node("n", true, c.usedMem)
		n.UsedCores = c.usedCores
		for strategy, want := range map[Strategy]float64{BinPack: c.want, Spread: 1 - c.want} {
			got, err := Rank([]Node{n}, s, strategy)
			if err != nil || math.Abs(got[0].Score-want) > 1e-9 {
				t.Errorf("%s, strategy %d: %v %v, want score %v", c.name, strategy, got, err, want)
			}
		}
	}
}

// TestUsedCoresWeigh: of two nodes with the same free memory, binpack
// prefers the one whose cores are busier, spread the other.
func TestUsedCoresWeigh(t *testing.T) {
	idle, busy := node("a-idle", true, 1024), node("b-busy", true, 1024)
	busy.UsedCores = 3
	nodes := []Node{idle, busy}
	if got, err := Rank(nodes, req(128), BinPack); err != nil || names(got) != "b-busy,a-idle" {
		t.Errorf("binpack: %s %v, want b-busy,a-idle", names(got), err)
	}
	if got, err := Rank(nodes, req(128), Spread); err != nil || names(got) != "a-idle,b-busy" {
		t.Errorf("spread: %s %v, want a-idle,b-busy", names(got), err)
	}
}

// TestNoFitNamesOnlyReasonsThatApply: the error lists each reason that
// ruled out a node, with its count, in a fixed order, and no others.
func TestNoFitNamesOnlyReasonsThatApply(t *testing.T) {
	dead := node("dead", true, 0)
	dead.Alive = false
	full := node("full", true, 4096)
	_, err := Rank([]Node{dead, full, node("private", false, 0), full}, req(64, spec.Port{Public: 80, Target: 80, Proto: spec.ProtoHTTP}), BinPack)
	want := "no node can run this workload: of 4 nodes, 1 not alive, 2 have too little memory left to reserve (a node reserves up to its --memory, by default the host's total: raise --memory, remove workloads or add nodes), 1 are private (public ports need a public node)"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	if _, err := Rank(nil, req(64), BinPack); err == nil || err.Error() != "no node can run this workload: the cluster has no nodes" {
		t.Errorf("no nodes: %v", err)
	}
}
