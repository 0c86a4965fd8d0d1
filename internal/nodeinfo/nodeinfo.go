// Package nodeinfo is what the API shows about nodes. It sits apart from
// the node and the cluster so the API layer can describe nodes without
// importing either.
package nodeinfo

import "github.com/hypercore-dev/hypercore/internal/spec"

// Info describes one node: who it is and what it can hold. The JSON names
// are what GET /v1/node answers.
type Info struct {
	Name string `json:"name"`
	// Cores and MemoryMiB are the node's whole capacity, not what is free.
	Cores      float64          `json:"cores"`
	MemoryMiB  int64            `json:"memory_mib"`
	Isolations []spec.Isolation `json:"isolations"`
	// BaseDomain is the domain workloads are served under: <id>.<base>.
	BaseDomain string `json:"base_domain"`
	// FreeMemoryMiB is what the host reports available now (MemAvailable).
	FreeMemoryMiB int64 `json:"free_memory_mib"`
	// MicroVMAccel is how microVMs run here, "kvm" or "tcg", when the
	// microVM driver says; empty otherwise.
	MicroVMAccel string `json:"microvm_accel"`
	// APIAddr is the address this node's API listens on, when it was told.
	APIAddr string `json:"api_addr"`
}
