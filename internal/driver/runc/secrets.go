package runc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// SealedRunDir is the tmpfs directory where the driver writes the copy of
// a bundle's config.json that holds a workload's secret environment, for
// the runtime to read at create and no longer: the copy in the state dir
// (on disk) never holds a secret value. The driver mounts a tmpfs (RAM)
// there when /run is not one.
var SealedRunDir = "/run/hypercore/sealed"

// ensureTmpfs makes sure dir is on a tmpfs (RAM), mounting a small one of
// its own there when it is not (a host whose /run is on disk).
func ensureTmpfs(dir string) error {
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err == nil && fs.Type == unix.TMPFS_MAGIC {
		return nil
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0700,size=64m"); err != nil {
		return fmt.Errorf("secrets: %s is not on a tmpfs and mounting one there failed, so a secret written there could reach a disk: %w", dir, err)
	}
	return nil
}

// sealedBundle writes a bundle for the runtime's create on SealedRunDir:
// the workload's config.json (read back from p.config) with secretEnv
// added to the process environment, and points p.bundle at it. cleanup
// removes it; the caller runs it once the runtime has read it. A workload
// with no secrets keeps its bundle in the state dir.
func (d *Driver) sealedBundle(id spec.ID, p *paths, secretEnv []string, files bool) (cleanup func(), err error) {
	noop := func() {}
	if len(secretEnv) == 0 && !files {
		return noop, nil
	}
	if d.name == "runsc" {
		return noop, errors.New("gVisor workloads cannot take secrets yet; use isolation container")
	}
	if err := os.MkdirAll(SealedRunDir, 0o700); err != nil {
		return noop, fmt.Errorf("secrets: %w", err)
	}
	if err := ensureTmpfs(SealedRunDir); err != nil {
		return noop, err
	}
	s, err := readSpec(p.config)
	if err != nil {
		return noop, err
	}
	if !filepath.IsAbs(s.Root.Path) {
		return noop, fmt.Errorf("secrets: rootfs %q is not absolute, so the bundle cannot move", s.Root.Path)
	}
	s.Process.Env = driver.MergeEnv(s.Process.Env, secretEnv)
	if files {
		// Filled by writeSecretFiles once the container exists.
		s.Mounts = append(s.Mounts, specs.Mount{Destination: secretsMount, Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "nodev", "noexec", "mode=0755", "size=8m"}})
	}
	// One directory per driver (its state dir), as nodes may share a host.
	sum := sha256.Sum256([]byte(d.opts.StateDir))
	dir := filepath.Join(SealedRunDir, hex.EncodeToString(sum[:8]), id.String())
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return noop, fmt.Errorf("secrets: %w", err)
	}
	cleanup = func() { os.RemoveAll(dir) }
	if err := writeSpec(filepath.Join(dir, "config.json"), s); err != nil {
		cleanup()
		return noop, err
	}
	p.bundle = dir
	return cleanup, nil
}

// secretsMount is where a workload finds its secrets as files.
const secretsMount = "/run/secrets"

// writeSecretFiles writes each secret to /run/secrets/NAME in the created
// (not yet started) container, through its init process's root: the
// tmpfs sealedBundle mounted there, so the values stay in RAM. No
// process of the workload has run yet, so nothing in the container can
// have planted a link there. The files are 0400 and belong to the
// workload's user.
func (d *Driver) writeSecretFiles(ctx context.Context, id spec.ID, p paths, files map[string][]byte) error {
	if len(files) == 0 {
		return nil
	}
	c, err := d.state(ctx, id)
	if err != nil {
		return err
	}
	s, err := readSpec(p.config)
	if err != nil {
		return err
	}
	dir := filepath.Join("/proc", strconv.Itoa(c.Pid), "root", secretsMount)
	uid, gid := hostIDs(s, s.Process.User.UID, s.Process.User.GID)
	for name, v := range files {
		if err := spec.ValidateSecretName(name); err != nil {
			return err
		}
		f := filepath.Join(dir, name)
		if err := writeAs(s, f, v); err != nil {
			return fmt.Errorf("secrets: write %s in the workload: %w", filepath.Join(secretsMount, name), err)
		}
		if err := os.Lchown(f, int(uid), int(gid)); err != nil {
			return fmt.Errorf("secrets: %w", err)
		}
	}
	return nil
}

// hostIDs maps a uid and gid inside s's user namespace to the host's; with
// no user namespace they are the same.
func hostIDs(s *specs.Spec, uid, gid uint32) (uint32, uint32) {
	if s.Linux == nil {
		return uid, gid
	}
	return mapID(s.Linux.UIDMappings, uid), mapID(s.Linux.GIDMappings, gid)
}

func mapID(ms []specs.LinuxIDMapping, id uint32) uint32 {
	for _, m := range ms {
		if id >= m.ContainerID && id-m.ContainerID < m.Size {
			return m.HostID + id - m.ContainerID
		}
	}
	return id
}

// writeAs writes a new 0400 file at f. In a workload with its own user
// namespace, the tmpfs at f belongs to that namespace, and a file made by
// host root (uid 0, which it does not map) is refused with EOVERFLOW; so
// the file is made with the fs ids of the workload's root. Fs ids are per
// thread, so the thread is locked for the write and given back to the
// runtime only after they are restored.
func writeAs(s *specs.Spec, f string, v []byte) error {
	root, ok := hostRoot(s)
	if !ok {
		return os.WriteFile(f, v, 0o400)
	}
	_, rootGID := hostIDs(s, 0, 0)
	runtime.LockOSThread()
	unix.Setfsgid(int(rootGID))
	unix.Setfsuid(int(root))
	err := os.WriteFile(f, v, 0o400)
	// Each call returns the id before it; when both were the workload's,
	// the thread is root's again and may serve other goroutines. Else it
	// stays locked, and the runtime ends it with this goroutine.
	if prevUID, _ := unix.SetfsuidRetUid(0); prevUID == int(root) {
		if prevGID, _ := unix.SetfsgidRetGid(0); prevGID == int(rootGID) {
			runtime.UnlockOSThread()
		}
	}
	return err
}
