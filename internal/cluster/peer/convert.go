package peer

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// maxNodeName bounds a node name read from a peer; a DNS name is no longer.
const maxNodeName = 253

// AllocationToProto is the wire form of a.
func AllocationToProto(a workload.Allocation) *clusterv1.Allocation {
	s := a.Spec
	ports := make([]*clusterv1.Port, len(s.Ports))
	for i, p := range s.Ports {
		ports[i] = &clusterv1.Port{Public: uint32(p.Public), Target: uint32(p.Target), Proto: protocolToProto(p.Proto)}
	}
	pa := &clusterv1.Allocation{
		Id: a.ID.String(),
		Spec: &clusterv1.WorkloadSpec{
			Image: s.Image, Cores: s.Cores, MemoryMib: s.MemoryMiB, Ports: ports,
			Env: s.Env, Args: s.Args, Isolation: string(s.Isolation), Tty: s.Tty, Secrets: s.Secrets,
			Egress: spec.EgressStrings(s.Egress), DiskMib: s.DiskMiB,
			Seccomp: s.Security.Seccomp, Userns: s.Security.UserNS,
			Restart: s.Restart, Volumes: s.Volumes, Entrypoint: s.Entrypoint, Workdir: s.Workdir, User: s.User,
		},
		Node:       a.Node,
		Desired:    desiredToProto(a.Desired),
		Generation: a.Generation,
	}
	if !a.CreatedAt.IsZero() {
		pa.CreatedAt = timestamppb.New(a.CreatedAt)
	}
	return pa
}

// AllocationFromProto reads an allocation a peer sent and checks it as the
// API checks its input: the id is a workload id, the spec passes
// spec.Spec.Check (which bounds every size in it), the node is named and
// the desired state is one there is. A peer is a cluster member, but what
// it sends is still network input.
func AllocationFromProto(pa *clusterv1.Allocation) (workload.Allocation, error) {
	if pa == nil {
		return workload.Allocation{}, errors.New("allocation: missing")
	}
	id, err := spec.ParseID(pa.GetId())
	if err != nil {
		return workload.Allocation{}, fmt.Errorf("allocation: %w", err)
	}
	ps := pa.GetSpec()
	if ps == nil {
		return workload.Allocation{}, fmt.Errorf("allocation %s: spec: missing", id)
	}
	// Spec.Check bounds the number of ports; this keeps a huge list from
	// being converted first.
	if len(ps.GetPorts()) > spec.MaxPorts {
		return workload.Allocation{}, fmt.Errorf("allocation %s: spec: ports: has %d entries; at most %d are allowed", id, len(ps.GetPorts()), spec.MaxPorts)
	}
	egress, err := spec.ParseEgress(ps.GetEgress())
	if err != nil {
		return workload.Allocation{}, fmt.Errorf("allocation %s: spec: %w", id, err)
	}
	s := spec.Spec{
		Image: ps.GetImage(), Cores: ps.GetCores(), MemoryMiB: ps.GetMemoryMib(),
		Env: ps.GetEnv(), Args: ps.GetArgs(), Isolation: spec.Isolation(ps.GetIsolation()), Tty: ps.GetTty(),
		Egress: egress, DiskMiB: ps.GetDiskMib(),
		Security: spec.Security{Seccomp: ps.GetSeccomp(), UserNS: ps.GetUserns()},
		Restart:  ps.GetRestart(), Entrypoint: ps.GetEntrypoint(), Workdir: ps.GetWorkdir(), User: ps.GetUser(),
	}
	if len(ps.GetVolumes()) > spec.MaxVolumes {
		return workload.Allocation{}, fmt.Errorf("allocation %s: spec: volumes: has %d entries; at most %d are allowed", id, len(ps.GetVolumes()), spec.MaxVolumes)
	}
	if len(ps.GetVolumes()) > 0 {
		s.Volumes = ps.GetVolumes()
	}
	// Spec.Check bounds and checks them; this keeps a huge map from being
	// checked entry by entry first.
	if len(ps.GetSecrets()) > spec.MaxSecrets {
		return workload.Allocation{}, fmt.Errorf("allocation %s: spec: secrets: has %d entries; at most %d are allowed", id, len(ps.GetSecrets()), spec.MaxSecrets)
	}
	if len(ps.GetSecrets()) > 0 {
		s.Secrets = ps.GetSecrets()
	}
	seen := make(map[uint32]bool, len(ps.GetPorts()))
	for _, p := range ps.GetPorts() {
		if seen[p.GetPublic()] {
			return workload.Allocation{}, fmt.Errorf("allocation %s: spec: ports: public port %d is mapped twice", id, p.GetPublic())
		}
		seen[p.GetPublic()] = true
		if p.GetPublic() < 1 || p.GetPublic() > 65535 || p.GetTarget() < 1 || p.GetTarget() > 65535 {
			return workload.Allocation{}, fmt.Errorf("allocation %s: spec: ports: %d:%d is not a pair of ports 1-65535", id, p.GetPublic(), p.GetTarget())
		}
		proto, ok := protocolFromProto(p.GetProto())
		if !ok {
			return workload.Allocation{}, fmt.Errorf("allocation %s: spec: ports: port %d has no known protocol (%v)", id, p.GetPublic(), p.GetProto())
		}
		s.Ports = append(s.Ports, spec.Port{Public: uint16(p.GetPublic()), Target: uint16(p.GetTarget()), Proto: proto})
	}
	if err := s.Check(); err != nil {
		return workload.Allocation{}, fmt.Errorf("allocation %s: spec: %w", id, err)
	}
	if len(s.Env) == 0 {
		s.Env = nil
	}
	if len(s.Args) == 0 {
		s.Args = nil
	}
	node := pa.GetNode()
	if node == "" || len(node) > maxNodeName {
		return workload.Allocation{}, fmt.Errorf("allocation %s: node: %q is not a node name", id, truncate(node, 80))
	}
	desired, ok := desiredFromProto(pa.GetDesired())
	if !ok {
		return workload.Allocation{}, fmt.Errorf("allocation %s: desired: %v is not running or stopped", id, pa.GetDesired())
	}
	a := workload.Allocation{ID: id, Spec: s, Node: node, Desired: desired, Generation: pa.GetGeneration()}
	if ts := pa.GetCreatedAt(); ts != nil {
		if err := ts.CheckValid(); err != nil {
			return workload.Allocation{}, fmt.Errorf("allocation %s: created_at: %w", id, err)
		}
		a.CreatedAt = ts.AsTime()
	}
	return a, nil
}

func protocolToProto(p spec.Protocol) clusterv1.Protocol {
	switch p {
	case spec.ProtoHTTP:
		return clusterv1.Protocol_PROTOCOL_HTTP
	case spec.ProtoTCP:
		return clusterv1.Protocol_PROTOCOL_TCP
	}
	return clusterv1.Protocol_PROTOCOL_UNSPECIFIED
}

func protocolFromProto(p clusterv1.Protocol) (spec.Protocol, bool) {
	switch p {
	case clusterv1.Protocol_PROTOCOL_HTTP:
		return spec.ProtoHTTP, true
	case clusterv1.Protocol_PROTOCOL_TCP:
		return spec.ProtoTCP, true
	}
	return "", false
}

func desiredToProto(d workload.Desired) clusterv1.Desired {
	switch d {
	case workload.DesiredRunning:
		return clusterv1.Desired_DESIRED_RUNNING
	case workload.DesiredStopped:
		return clusterv1.Desired_DESIRED_STOPPED
	}
	return clusterv1.Desired_DESIRED_UNSPECIFIED
}

func desiredFromProto(d clusterv1.Desired) (workload.Desired, bool) {
	switch d {
	case clusterv1.Desired_DESIRED_RUNNING:
		return workload.DesiredRunning, true
	case clusterv1.Desired_DESIRED_STOPPED:
		return workload.DesiredStopped, true
	}
	return "", false
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
