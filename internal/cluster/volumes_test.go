package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/volume"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// TestVolumesPinPlacementAndRefuseRemovalWhileMounted checks the cluster
// state's rules for volumes: an allocation mounts only volumes that exist
// on its own node, the scheduler places a workload with a volume on that
// node only, and a volume a workload mounts (whatever its state) cannot
// be removed.
func TestVolumesPinPlacementAndRefuseRemovalWhileMounted(t *testing.T) {
	c := loneCluster(t)
	now := time.Now().UTC()
	for _, v := range []raftstore.Volume{{Name: "here", Node: "n1", SizeMiB: 64, CreatedAt: now}, {Name: "away", Node: "n2", SizeMiB: 64, CreatedAt: now}} {
		if err := c.raft.CreateVolume(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.raft.CreateVolume(raftstore.Volume{Name: "here", Node: "n1", SizeMiB: 64}); !errors.Is(err, volume.ErrExists) {
		t.Errorf("second create: %v, want ErrExists", err)
	}
	base := spec.Spec{Image: "example.test/pg:16", Cores: 1, MemoryMiB: 64, Isolation: spec.IsolationContainer}
	with := func(vols map[string]string) spec.Spec { s := base; s.Volumes = vols; return s }

	ranked, err := c.rank(with(map[string]string{"here": "/data"}), nil)
	if err != nil || len(ranked) != 1 || ranked[0].Name != "n1" {
		t.Fatalf("rank with a volume on n1: %v %v, want n1", ranked, err)
	}
	if _, err := c.rank(with(map[string]string{"away": "/data"}), nil); !errors.Is(err, workload.ErrNoCapacity) {
		t.Errorf("rank with a volume on n2, which is not a member: %v, want no node", err)
	}
	if _, err := c.rank(with(map[string]string{"here": "/a", "away": "/b"}), nil); !errors.Is(err, volume.ErrElsewhere) {
		t.Errorf("rank with volumes on two nodes: %v, want ErrElsewhere", err)
	}
	var fe *spec.FieldError
	if _, err := c.rank(with(map[string]string{"nope": "/data"}), nil); !errors.As(err, &fe) || !strings.Contains(err.Error(), "hypercore volume create nope") {
		t.Errorf("rank with a volume that does not exist: %v, want a volumes field error naming the command", err)
	}

	a := workload.Allocation{ID: spec.NewID(), Node: "n1", Desired: workload.DesiredStopped, CreatedAt: now, Spec: with(map[string]string{"here": "/data"})}
	if err := c.raft.Create(a); err != nil {
		t.Fatal(err)
	}
	bad := a
	bad.ID, bad.Spec = spec.NewID(), with(map[string]string{"away": "/data"})
	if err := c.raft.Create(bad); !errors.Is(err, volume.ErrElsewhere) {
		t.Errorf("an allocation on n1 of a volume on n2: %v, want ErrElsewhere", err)
	}
	bad.Spec = with(map[string]string{"gone": "/data"})
	if err := c.raft.Create(bad); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("an allocation of a volume that does not exist: %v, want ErrNotFound", err)
	}

	err = c.RemoveVolume(context.Background(), "here")
	if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), a.ID.String()) {
		t.Fatalf("removing a volume a stopped workload mounts: %v, want ErrInUse naming %s", err, a.ID)
	}
	if v, err := c.Volume("here"); err != nil || len(v.UsedBy) != 1 || v.UsedBy[0] != a.ID.String() {
		t.Errorf("volume here: %+v %v, want used by %s", v, err, a.ID)
	}
	if err := c.raft.Delete(a.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.raft.DeleteVolume("here"); err != nil {
		t.Fatalf("removing an unused volume: %v", err)
	}
	list, err := c.Volumes()
	if err != nil || len(list) != 1 || list[0].Name != "away" {
		t.Errorf("volumes left: %+v %v, want away", list, err)
	}
}
