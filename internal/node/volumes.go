package node

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/volume"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// volumeMounts makes s's volumes ready for its isolation: mounted on the
// host for a container or gVisor, unmounted (its image handed over) for a
// microVM, which must be the only writer of the file system.
func (n *Node) volumeMounts(ctx context.Context, id spec.ID, s spec.Spec) ([]driver.VolumeMount, error) {
	if len(s.Volumes) == 0 {
		return nil, nil
	}
	if n.Volumes == nil {
		return nil, fmt.Errorf("%w: node %s keeps no volumes", ErrUnsupported, n.cfg.Name)
	}
	if err := n.checkVolumeWriters(id, s); err != nil {
		return nil, err
	}
	var out []driver.VolumeMount
	for _, name := range slices.Sorted(maps.Keys(s.Volumes)) {
		m := driver.VolumeMount{Name: name, Target: s.Volumes[name]}
		var err error
		if s.Isolation == spec.IsolationMicroVM {
			if err = n.Volumes.Unmount(ctx, name); err == nil {
				m.Image, err = n.Volumes.Image(name)
			}
		} else {
			m.HostDir, err = n.Volumes.Mount(ctx, name)
		}
		if err != nil {
			return nil, fmt.Errorf("node: volume %s on node %s: %w", name, n.cfg.Name, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// checkVolumeWriters refuses to mount a volume in a microVM while another
// workload here that is meant to run mounts it, and in any workload while
// a microVM does: the VM's kernel must be its file system's only writer,
// as the host's is for containers and gVisor, which share it.
func (n *Node) checkVolumeWriters(id spec.ID, s spec.Spec) error {
	list, err := n.Store.List()
	if err != nil {
		return err
	}
	for _, r := range list {
		if r.ID == id || r.Desired != workload.DesiredRunning || (r.State != workload.StateRunning && r.State != workload.StateCreating) {
			continue
		}
		if s.Isolation != spec.IsolationMicroVM && r.Spec.Isolation != spec.IsolationMicroVM {
			continue
		}
		for name := range s.Volumes {
			if _, ok := r.Spec.Volumes[name]; ok {
				return fmt.Errorf("%w: volume %s is mounted by workload %s (%s); a volume mounted in a microVM is that VM's alone: stop one of them",
					volume.ErrInUse, name, r.ID, r.Spec.Isolation)
			}
		}
	}
	return nil
}

// CreateVolume makes volume name of sizeMiB on this node; one that exists
// keeps its data.
func (n *Node) CreateVolume(ctx context.Context, name string, sizeMiB int64) error {
	if n.Volumes == nil {
		return fmt.Errorf("%w: node %s keeps no volumes", ErrUnsupported, n.cfg.Name)
	}
	return n.Volumes.Create(ctx, name, sizeMiB)
}

// RemoveVolume deletes volume name and its data from this node, unless a
// workload recorded here mounts it (the cluster state refuses that first;
// this is the last guard, on the node that holds the data).
func (n *Node) RemoveVolume(ctx context.Context, name string) error {
	if n.Volumes == nil {
		return nil
	}
	list, err := n.Store.List()
	if err != nil {
		return err
	}
	var users []string
	for _, r := range list {
		if _, ok := r.Spec.Volumes[name]; ok {
			users = append(users, r.ID.String())
		}
	}
	if len(users) > 0 {
		sort.Strings(users)
		return fmt.Errorf("%w: %s is mounted by workload %s on node %s; remove it first", volume.ErrInUse, name, strings.Join(users, ", "), n.cfg.Name)
	}
	return n.Volumes.Remove(ctx, name)
}

// LocalVolumes names the volumes this node holds on disk.
func (n *Node) LocalVolumes() ([]string, error) {
	if n.Volumes == nil {
		return nil, nil
	}
	return n.Volumes.List()
}
