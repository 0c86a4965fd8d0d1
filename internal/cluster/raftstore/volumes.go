package raftstore

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/volume"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// Volume is a named volume as the cluster state records it.
type Volume = volume.Record

// The volume errors a write may result in; see package volume.
var (
	ErrVolumeExists    = volume.ErrExists
	ErrVolumeNotFound  = volume.ErrNotFound
	ErrVolumeInUse     = volume.ErrInUse
	ErrVolumeElsewhere = volume.ErrElsewhere
)

// The volume ops; the state machine checks volume use when it applies
// allocations, so a spawn racing a volume's removal cannot both win.
const (
	opCreateVolume = "create-volume"
	opDeleteVolume = "delete-volume"
)

// checkVolumeCommand is check for the volume ops.
func checkVolumeCommand(c *command) error {
	if c.Volume == nil || spec.ValidateVolumeName(c.Volume.Name) != nil {
		return fmt.Errorf("%w: %s without a valid volume name", ErrBadCommand, c.Op)
	}
	if c.Op == opCreateVolume && (c.Volume.Node == "" || c.Volume.SizeMiB < spec.MinVolumeMiB || c.Volume.SizeMiB > spec.MaxVolumeMiB) {
		return fmt.Errorf("%w: %s of %s without a node or with a size outside %d-%d MiB", ErrBadCommand, c.Op, c.Volume.Name, spec.MinVolumeMiB, spec.MaxVolumeMiB)
	}
	return nil
}

// applyVolume applies a volume op. The caller holds f.mu.
func (f *fsm) applyVolume(c command) error {
	v := *c.Volume
	switch c.Op {
	case opCreateVolume:
		if _, ok := f.volumes[v.Name]; ok {
			return fmt.Errorf("raftstore: %w: %s", ErrVolumeExists, v.Name)
		}
		f.volumes[v.Name] = v
	case opDeleteVolume:
		if users := f.volumeUsers(v.Name); len(users) > 0 {
			return fmt.Errorf("raftstore: %w: %s is mounted by workload %s; remove it first", ErrVolumeInUse, v.Name, strings.Join(users, ", "))
		}
		delete(f.volumes, v.Name)
	}
	return nil
}

// volumeUsers are the ids of the workloads whose spec mounts name, sorted.
// The caller holds f.mu.
func (f *fsm) volumeUsers(name string) []string {
	var ids []string
	for id, r := range f.allocs {
		if _, ok := r.Allocation.Spec.Volumes[name]; ok {
			ids = append(ids, string(id))
		}
	}
	sort.Strings(ids)
	return ids
}

// checkVolumes refuses an allocation that mounts a volume the cluster
// does not hold, or one that lives on another node. The caller holds f.mu.
func (f *fsm) checkVolumes(a workload.Allocation) error {
	for _, name := range slices.Sorted(maps.Keys(a.Spec.Volumes)) {
		v, ok := f.volumes[name]
		if !ok {
			return fmt.Errorf("raftstore: %w: %s (create it with hypercore volume create %s)", ErrVolumeNotFound, name, name)
		}
		if v.Node != a.Node {
			return fmt.Errorf("raftstore: %w: %s is on node %s, not %s", ErrVolumeElsewhere, name, v.Node, a.Node)
		}
	}
	return nil
}

// CreateVolume records a new volume on v.Node; ErrVolumeExists if the
// name is taken.
func (s *Store) CreateVolume(v Volume) error {
	_, err := s.apply(command{Op: opCreateVolume, Volume: &v})
	return err
}

// DeleteVolume removes the record of volume name; ErrVolumeInUse while a
// workload mounts it. A missing name is not an error.
func (s *Store) DeleteVolume(name string) error {
	_, err := s.apply(command{Op: opDeleteVolume, Volume: &Volume{Name: name}})
	return err
}

// Volume returns the record of volume name, from the local copy, with the
// ids of the workloads that mount it.
func (s *Store) Volume(name string) (Volume, []string, error) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	v, ok := s.fsm.volumes[name]
	if !ok {
		return Volume{}, nil, fmt.Errorf("%w: %s", ErrVolumeNotFound, name)
	}
	return v, s.fsm.volumeUsers(name), nil
}

// Volumes returns every volume, by name, with the ids of the workloads
// that mount each.
func (s *Store) Volumes() ([]Volume, map[string][]string) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	users := map[string][]string{}
	out := make([]Volume, 0, len(s.fsm.volumes))
	for _, name := range slices.Sorted(maps.Keys(s.fsm.volumes)) {
		out = append(out, s.fsm.volumes[name])
		users[name] = s.fsm.volumeUsers(name)
	}
	return out, users
}
