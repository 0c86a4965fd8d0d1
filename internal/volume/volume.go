// Package volume keeps a node's named volumes: each one an ext4 file
// system in a sparse image file of a fixed size, so the size is enforced
// by the file system itself (a write past it fails with ENOSPC) and the
// data is one file that outlives the workloads that mount it.
//
// For containers and gVisor a volume is loop-mounted on the host and its
// data directory bind-mounted into the workload (through the gofer for
// gVisor). A microVM gets the image file itself as a disk. Making,
// loop-mounting and unmounting the images is internal/diskimage's job;
// this package keeps the names, their sizes and the data directory.
//
// Layout under the directory it is given:
//
//	<name>.img   the ext4 image
//	mnt/<name>/  where it is loop-mounted; workloads see mnt/<name>/data,
//	             so the file system's lost+found is not in their directory
//	             (initdb, for one, refuses a data directory holding it)
package volume

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/diskimage"
	"github.com/hypercore-dev/hypercore/internal/keylock"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// ErrNotFound means there is no volume of that name (in the cluster, or
// on this node).
var ErrNotFound = errors.New("volume not found on this node")

// Manager keeps the volumes in one directory. One operation at a time
// runs per volume.
type Manager struct {
	dir   string
	locks keylock.Map
}

// Open returns the manager of the volumes in dir, making dir if needed.
func Open(dir string) (*Manager, error) {
	if err := os.MkdirAll(filepath.Join(dir, "mnt"), 0o700); err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	return &Manager{dir: dir}, nil
}

func (m *Manager) image(name string) string    { return filepath.Join(m.dir, name+".img") }
func (m *Manager) mountDir(name string) string { return filepath.Join(m.dir, "mnt", name) }

// Create makes volume name of sizeMiB, empty. Creating one that exists is
// not an error (a create retried after a crash, or the cluster's record
// made again): its data is kept.
func (m *Manager) Create(ctx context.Context, name string, sizeMiB int64) error {
	if err := spec.ValidateVolumeName(name); err != nil {
		return err
	}
	unlock := m.locks.Lock(name)
	defer unlock()
	img := m.image(name)
	if _, err := os.Stat(img); err == nil {
		return nil
	}
	tmp := img + ".new"
	if err := diskimage.Create(ctx, tmp, sizeMiB); err != nil {
		return fmt.Errorf("volume %s: make its %d MiB ext4 image: %w", name, sizeMiB, err)
	}
	if err := os.Rename(tmp, img); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("volume %s: make its %d MiB ext4 image: %w", name, sizeMiB, err)
	}
	return nil
}

// Exists says whether this node holds volume name.
func (m *Manager) Exists(name string) bool {
	_, err := os.Stat(m.image(name))
	return err == nil
}

// Image is the path of volume name's ext4 image, which a microVM gets as
// a disk. The volume must not be mounted on the host meanwhile: Unmount
// it first.
func (m *Manager) Image(name string) (string, error) {
	if !m.Exists(name) {
		return "", fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return m.image(name), nil
}

// Mount loop-mounts volume name on the host, if it is not already, and
// returns its data directory, which a workload's mount binds. It is
// idempotent, so a node that restarted mounts again what a reboot
// unmounted.
func (m *Manager) Mount(ctx context.Context, name string) (string, error) {
	unlock := m.locks.Lock(name)
	defer unlock()
	if !m.Exists(name) {
		return "", fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	dir := m.mountDir(name)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	// diskimage mounts an image already on a loop device (mounted in
	// another mount namespace: a daemon restarted by `ip netns exec`, or a
	// running container's) from that device, so the kernel shares one file
	// system, and leaves a mounted dir as it is.
	if err := diskimage.MountFlags(m.image(name), dir, unix.MS_NOSUID); err != nil {
		return "", fmt.Errorf("volume %s: %w", name, err)
	}
	// A new data directory is world-writable and sticky, as /tmp is: a
	// workload runs as its image's user, which the volume cannot know.
	// Later mounts keep what the workload made of it.
	switch err := os.Mkdir(data, 0o755); {
	case err == nil:
		if err := os.Chmod(data, 0o1777); err != nil {
			return "", err
		}
	case !errors.Is(err, os.ErrExist):
		return "", err
	}
	return data, nil
}

// Unmount unmounts volume name from the host, if it is mounted. Its data
// stays in its image.
func (m *Manager) Unmount(ctx context.Context, name string) error {
	unlock := m.locks.Lock(name)
	defer unlock()
	return m.unmount(name)
}

func (m *Manager) unmount(name string) error {
	// Not lazily: a microVM may get the image next, and a file system
	// still alive in some mount namespace would be a second writer.
	if err := diskimage.UnmountIdle(m.mountDir(name)); err != nil {
		return fmt.Errorf("volume %s: %w (is a workload still using it?)", name, err)
	}
	return nil
}

// Remove unmounts volume name and deletes it with its data. The caller
// (the cluster state) has made sure no workload mounts it. Removing a
// volume this node does not hold is not an error.
func (m *Manager) Remove(ctx context.Context, name string) error {
	if err := spec.ValidateVolumeName(name); err != nil {
		return err
	}
	unlock := m.locks.Lock(name)
	defer unlock()
	if err := m.unmount(name); err != nil {
		return err
	}
	if err := os.Remove(m.mountDir(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("volume %s: remove its mount point: %w", name, err)
	}
	if err := os.Remove(m.image(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	return nil
}

// List names the volumes this node holds.
func (m *Manager) List() ([]string, error) {
	entries, err := os.ReadDir(m.dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".img"); ok && spec.ValidateVolumeName(n) == nil {
			names = append(names, n)
		}
	}
	return names, nil
}
