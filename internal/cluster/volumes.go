package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/volume"
)

// CreateVolume implements server.Backend: the volume is recorded on this
// node (the one the caller asked) and made here. A volume lives where it
// was made; workloads that mount it are placed there.
func (c *Cluster) CreateVolume(ctx context.Context, name string, sizeMiB int64) (volume.Info, error) {
	v := raftstore.Volume{Name: name, Node: c.cfg.NodeName, SizeMiB: sizeMiB, CreatedAt: time.Now().UTC()}
	if err := c.raft.CreateVolume(v); err != nil {
		return volume.Info{}, err
	}
	if err := c.local.CreateVolume(context.WithoutCancel(ctx), name, sizeMiB); err != nil {
		if derr := c.raft.DeleteVolume(name); derr != nil {
			c.log.Error("volume create: could not delete the record of a failed create", "volume", name, "err", derr)
		}
		return volume.Info{}, err
	}
	return volume.Info{Record: v, UsedBy: []string{}}, nil
}

// Volume implements server.Backend.
func (c *Cluster) Volume(name string) (volume.Info, error) {
	v, users, err := c.raft.Volume(name)
	if err != nil {
		return volume.Info{}, err
	}
	return volume.Info{Record: v, UsedBy: orEmpty(users)}, nil
}

// Volumes implements server.Backend: every volume, by name.
func (c *Cluster) Volumes() ([]volume.Info, error) {
	list, users := c.raft.Volumes()
	out := make([]volume.Info, 0, len(list))
	for _, v := range list {
		out = append(out, volume.Info{Record: v, UsedBy: orEmpty(users[v.Name])})
	}
	return out, nil
}

// RemoveVolume implements server.Backend: the record goes first, which
// the cluster state refuses while a workload mounts the volume
// (volume.ErrInUse), then the data, here if the volume is this node's,
// else by its own node's reconciler.
func (c *Cluster) RemoveVolume(ctx context.Context, name string) error {
	v, _, err := c.raft.Volume(name)
	if err != nil {
		return err
	}
	if err := c.raft.DeleteVolume(name); err != nil {
		return err
	}
	if v.Node == c.cfg.NodeName {
		return c.local.RemoveVolume(context.WithoutCancel(ctx), name)
	}
	return nil
}

// volumeNode is the node s must run on for its volumes, "" when it has
// none. Volumes on several nodes cannot be mounted together.
func (c *Cluster) volumeNode(s spec.Spec) (string, error) {
	node := ""
	for _, name := range slices.Sorted(maps.Keys(s.Volumes)) {
		v, _, err := c.raft.Volume(name)
		if errors.Is(err, volume.ErrNotFound) {
			return "", &spec.FieldError{Field: "volumes", Msg: fmt.Sprintf("volume %s does not exist; create it first: hypercore volume create %s", name, name)}
		}
		if err != nil {
			return "", err
		}
		if node != "" && v.Node != node {
			return "", fmt.Errorf("%w: the workload's volumes live on nodes %s and %s; a workload mounts volumes of one node", volume.ErrElsewhere, node, v.Node)
		}
		node = v.Node
	}
	return node, nil
}

// removeOrphanVolumes deletes the volumes this node holds on disk that the
// cluster state no longer records: removed through another node.
func (c *Cluster) removeOrphanVolumes(ctx context.Context) {
	names, err := c.local.LocalVolumes()
	if err != nil || len(names) == 0 {
		return
	}
	for _, name := range names {
		v, _, err := c.raft.Volume(name)
		if err == nil && v.Node == c.cfg.NodeName {
			continue
		}
		if !errors.Is(err, volume.ErrNotFound) && err != nil {
			continue
		}
		c.log.Info("removing a volume the cluster no longer records", "volume", name)
		if err := c.local.RemoveVolume(ctx, name); err != nil {
			c.log.Warn("remove volume", "volume", name, "err", err)
		}
	}
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
