package runc

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
func (d *Driver) sealedBundle(id spec.ID, p *paths, secretEnv []string) (cleanup func(), err error) {
	noop := func() {}
	if len(secretEnv) == 0 {
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
