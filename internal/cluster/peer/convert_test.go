package peer

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clusterv1 "github.com/hypercore-dev/hypercore/api/hypercore/cluster/v1"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

func TestAllocationRoundTrip(t *testing.T) {
	for _, a := range []workload.Allocation{
		testAllocation(),
		// The least an allocation has: no ports, env, args or time.
		{ID: spec.NewID(), Spec: spec.Spec{Image: "busybox", Cores: 1, MemoryMiB: 256, Isolation: spec.IsolationMicroVM},
			Node: "n1", Desired: workload.DesiredStopped},
	} {
		// Through the wire encoding, as a peer gets it.
		b, err := proto.Marshal(AllocationToProto(a))
		if err != nil {
			t.Fatal(err)
		}
		var pa clusterv1.Allocation
		if err := proto.Unmarshal(b, &pa); err != nil {
			t.Fatal(err)
		}
		got, err := AllocationFromProto(&pa)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != a.ID || got.Node != a.Node || got.Desired != a.Desired || got.Generation != a.Generation ||
			!got.CreatedAt.Equal(a.CreatedAt) || got.CreatedAt.IsZero() != a.CreatedAt.IsZero() || !sameSpec(got.Spec, a.Spec) ||
			(got.Spec.Env == nil) != (a.Spec.Env == nil) || (got.Spec.Args == nil) != (a.Spec.Args == nil) {
			t.Errorf("round trip gave\n%+v\nfor\n%+v", got, a)
		}
	}
}

// TestAllocationFromProtoRefuses: what a peer sends is checked as API
// input is, and the error names the field.
func TestAllocationFromProtoRefuses(t *testing.T) {
	valid := func() *clusterv1.Allocation { return AllocationToProto(testAllocation()) }
	manyPorts := make([]*clusterv1.Port, spec.MaxPorts+1)
	for i := range manyPorts {
		manyPorts[i] = &clusterv1.Port{Public: uint32(1000 + i), Target: 80, Proto: clusterv1.Protocol_PROTOCOL_TCP}
	}
	for _, c := range []struct {
		name, want string
		mod        func(*clusterv1.Allocation)
	}{
		{"id", "workload id", func(a *clusterv1.Allocation) { a.Id = "../../etc" }},
		{"spec", "spec: missing", func(a *clusterv1.Allocation) { a.Spec = nil }},
		{"image", "image", func(a *clusterv1.Allocation) { a.Spec.Image = "" }},
		{"cores", "cores", func(a *clusterv1.Allocation) { a.Spec.Cores = 1e9 }},
		{"memory", "memory", func(a *clusterv1.Allocation) { a.Spec.MemoryMib = 1 }},
		{"isolation", "isolation", func(a *clusterv1.Allocation) { a.Spec.Isolation = "vm-of-my-own" }},
		{"env", "env", func(a *clusterv1.Allocation) { a.Spec.Env = []string{"no equals sign"} }},
		{"env size", "env", func(a *clusterv1.Allocation) { a.Spec.Env = []string{"A=" + strings.Repeat("x", spec.MaxEnvBytes)} }},
		{"args", "args", func(a *clusterv1.Allocation) { a.Spec.Args = []string{"a\x00b"} }},
		{"port 0", "ports", func(a *clusterv1.Allocation) { a.Spec.Ports[0].Public = 0 }},
		{"port over 65535", "ports", func(a *clusterv1.Allocation) { a.Spec.Ports[0].Target = 65536 + 80 }},
		{"port protocol", "protocol", func(a *clusterv1.Allocation) { a.Spec.Ports[0].Proto = clusterv1.Protocol_PROTOCOL_UNSPECIFIED }},
		{"too many ports", "ports", func(a *clusterv1.Allocation) { a.Spec.Ports = manyPorts }},
		{"port twice", "twice", func(a *clusterv1.Allocation) { a.Spec.Ports[1].Public = a.Spec.Ports[0].Public }},
		{"node", "node", func(a *clusterv1.Allocation) { a.Node = "" }},
		{"long node", "node", func(a *clusterv1.Allocation) { a.Node = strings.Repeat("n", 300) }},
		{"desired", "desired", func(a *clusterv1.Allocation) { a.Desired = clusterv1.Desired_DESIRED_UNSPECIFIED }},
		{"created_at", "created_at", func(a *clusterv1.Allocation) { a.CreatedAt = &timestamppb.Timestamp{Seconds: 1 << 62} }},
	} {
		a := valid()
		c.mod(a)
		if _, err := AllocationFromProto(a); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error about %q", c.name, err, c.want)
		}
	}
	if _, err := AllocationFromProto(nil); err == nil {
		t.Error("a missing allocation passed")
	}
	if _, err := AllocationFromProto(valid()); err != nil {
		t.Errorf("the valid allocation: %v", err)
	}
}
