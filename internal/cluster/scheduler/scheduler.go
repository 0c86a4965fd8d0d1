// Package scheduler decides where a workload runs. Rank is a pure function
// of the node set and the request, so it is easy to test and to benchmark
// with thousands of simulated nodes.
package scheduler

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// ErrNoFit means no node can run the request; its message says why each
// kind of node was ruled out.
var ErrNoFit = errors.New("no node can run this workload")

// Strategy says how fitting nodes are ordered.
type Strategy int

// The strategies.
const (
	// BinPack prefers the fullest node that fits, keeping others empty.
	BinPack Strategy = iota
	// Spread prefers the emptiest node, spreading load and failure risk.
	Spread
)

// ParseStrategy reads "binpack" or "spread".
func ParseStrategy(s string) (Strategy, error) {
	switch strings.ToLower(s) {
	case "binpack", "bin-pack", "":
		return BinPack, nil
	case "spread":
		return Spread, nil
	}
	return 0, fmt.Errorf("placement strategy %q: use binpack or spread", s)
}

// Node is what the scheduler knows of one node.
type Node struct {
	Name  string
	Alive bool
	// Public nodes can take workloads with public ports.
	Public     bool
	Isolations []spec.Isolation
	Cores      float64
	MemoryMiB  int64
	// UsedMemoryMiB is reserved by workloads already placed there.
	UsedMemoryMiB int64
	// UsedCores is the sum of placed workloads' cores; cores are not
	// reserved, but spread and binpack weigh them.
	UsedCores float64
	// PortMin and PortMax bound the public TCP ports it may open; zero
	// means any.
	PortMin, PortMax uint16
	// TakenPorts are public TCP ports already in use there.
	TakenPorts map[uint16]bool
}

// Candidate is a node that fits, with its score (higher is better).
type Candidate struct {
	Name  string
	Score float64
}

// reason indexes why a node was ruled out, for the error message.
type reason int

const (
	notAlive reason = iota
	noIsolation
	tooFewCores
	tooLittleMemory
	notPublic
	portTaken
	portOutOfRange
	nReasons
)

var reasonText = [nReasons]string{
	notAlive:        "not alive",
	noIsolation:     "cannot run this isolation",
	tooFewCores:     "have fewer cores",
	tooLittleMemory: "have too little memory left to reserve (a node reserves up to its --memory, by default the host's total: raise --memory, remove workloads or add nodes)",
	notPublic:       "are private (public ports need a public node)",
	portTaken:       "have a requested TCP port taken",
	portOutOfRange:  "allow no requested TCP port (it is outside their --port-range: widen it on a node)",
}

// Rank returns the nodes that can run s, best first, ties broken by name so
// that the result does not depend on the order of nodes. It allocates only
// the result.
func Rank(nodes []Node, s spec.Spec, strategy Strategy) ([]Candidate, error) {
	var why [nReasons]int
	out := make([]Candidate, 0, min(len(nodes), 64))
	needPublic := len(s.Ports) > 0
	for i := range nodes {
		n := &nodes[i]
		r, ok := fits(n, s, needPublic)
		if !ok {
			why[r]++
			continue
		}
		out = append(out, Candidate{Name: n.Name, Score: score(n, s, strategy)})
	}
	if len(out) == 0 {
		return nil, noFit(len(nodes), why)
	}
	slices.SortFunc(out, func(a, b Candidate) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

func fits(n *Node, s spec.Spec, needPublic bool) (reason, bool) {
	switch {
	case !n.Alive:
		return notAlive, false
	case !slices.Contains(n.Isolations, s.Isolation):
		return noIsolation, false
	case s.Cores > n.Cores:
		return tooFewCores, false
	case s.MemoryMiB > n.MemoryMiB-n.UsedMemoryMiB:
		return tooLittleMemory, false
	case needPublic && !n.Public:
		return notPublic, false
	}
	for _, p := range s.Ports {
		if p.Proto != spec.ProtoTCP {
			continue
		}
		if n.PortMin != 0 && (p.Public < n.PortMin || p.Public > n.PortMax) {
			return portOutOfRange, false
		}
		if n.TakenPorts[p.Public] {
			return portTaken, false
		}
	}
	return 0, true
}

// score is the node's load after placing s, from 0 (empty) to 1 (full),
// memory weighing as much as CPU; binpack wants it high, spread low.
func score(n *Node, s spec.Spec, strategy Strategy) float64 {
	load := 0.5 * float64(n.UsedMemoryMiB+s.MemoryMiB) / float64(max(n.MemoryMiB, 1))
	load += 0.5 * min((n.UsedCores+s.Cores)/max(n.Cores, 0.01), 1)
	if strategy == Spread {
		return 1 - load
	}
	return load
}

func noFit(total int, why [nReasons]int) error {
	if total == 0 {
		return fmt.Errorf("%w: the cluster has no nodes", ErrNoFit)
	}
	var parts []string
	for r, count := range why {
		if count > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", count, reasonText[r]))
		}
	}
	return fmt.Errorf("%w: of %d nodes, %s", ErrNoFit, total, strings.Join(parts, ", "))
}
