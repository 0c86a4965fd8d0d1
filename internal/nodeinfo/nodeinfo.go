// Package nodeinfo is how a node describes itself to the API: its own
// identity and capacity (Info, GET /v1/node and NodeService.Info) and what
// the cluster knows of each member (Member, GET /v1/nodes). It holds plain
// values only, so the API layer, the node and the cluster can all use it
// without importing each other.
package nodeinfo

import "github.com/hypercore-dev/hypercore/internal/spec"

// Info describes the node that answers an API call. The JSON names are
// snake_case like every other key of the API.
type Info struct {
	Name      string  `json:"name"`
	Cores     float64 `json:"cores"`
	MemoryMiB int64   `json:"memory_mib"`
	// Isolations are those this node has a driver for, in the order
	// container, gvisor, microvm.
	Isolations []spec.Isolation `json:"isolations"`
	BaseDomain string           `json:"base_domain"`
	// FreeMemoryMiB is what the host reports available now (MemAvailable).
	FreeMemoryMiB int64 `json:"free_memory_mib"`
	// MicroVMAccel is how microVMs run here, "kvm" or "tcg", when the
	// microVM driver says; empty when it offers none.
	MicroVMAccel string `json:"microvm_accel"`
	// APIAddr is this node's API address, host:port (--grpc-bind-addr),
	// the same the cluster announces in its gossip tags. The node that
	// runs workloads does not know it; the cluster, which serves the API,
	// fills it in.
	APIAddr string `json:"api_addr"`
}

// Member is one node of the cluster as the API shows it: its gossip state
// and tags, and how many workloads are meant to run on it.
type Member struct {
	Name string `json:"name"`
	// State is the gossip state: alive, failed or left.
	State string `json:"state"`
	// Role is server (keeps the raft state) or worker.
	Role          string   `json:"role"`
	Leader        bool     `json:"leader"`
	Addr          string   `json:"addr"`
	APIAddr       string   `json:"api_addr,omitempty"`
	Public        bool     `json:"public"`
	Cores         float64  `json:"cores"`
	MemoryMiB     int64    `json:"memory_mib"`
	FreeMemoryMiB int64    `json:"free_memory_mib"`
	Isolations    []string `json:"isolations,omitempty"`
	// Workloads counts the allocations placed on it that are meant to run.
	Workloads int `json:"workloads"`
}
