package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hypercore-dev/hypercore/internal/config"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/cri"
	"github.com/hypercore-dev/hypercore/internal/driver/gvisor"
	"github.com/hypercore-dev/hypercore/internal/driver/qemu"
	"github.com/hypercore-dev/hypercore/internal/driver/runc"
	"github.com/hypercore-dev/hypercore/internal/rootless"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// newDrivers builds one driver per isolation this node can offer. The
// container driver is required; the others are added when their tools are
// present, so a node advertises only what it can really run.
func newDrivers(log *slog.Logger, cfg *config.Config, cgroupParent string, userns rootless.State) (map[spec.Isolation]driver.Driver, error) {
	dataDir := cfg.DataDir
	if cfg.CRIEndpoint != "" {
		// A CRI endpoint replaces the OCI runtime for containers only: the
		// other isolations stay hypercore's own.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		o := cri.Options{Endpoint: cfg.CRIEndpoint, CA: cfg.CRICA, Cert: cfg.CRICert, Key: cfg.CRIKey}
		if strings.HasPrefix(o.Endpoint, "unix://") {
			// The endpoint is on this machine: it writes the logs where
			// the node can read them back.
			o.LogDir = filepath.Join(dataDir, "cri-logs")
		}
		ctr, err := cri.New(ctx, o)
		if err != nil {
			return nil, fmt.Errorf("--cri-endpoint: %w", err)
		}
		log.Info("containers run on a CRI endpoint", "endpoint", cfg.CRIEndpoint)
		return withOthers(log, cfg, cgroupParent, userns, map[spec.Isolation]driver.Driver{spec.IsolationContainer: ctr}), nil
	}
	ctr, err := runc.New(runc.Options{Runtime: cfg.Runtime, StateDir: filepath.Join(dataDir, "containers"), CgroupParent: cgroupParent, DefaultDiskMiB: int64(cfg.DefaultDiskMiB),
		Rootless: userns.Rootless, MappedGIDs: userns.GIDs})
	if err != nil {
		return nil, err
	}
	if userns.Rootless {
		enforced, not := ctr.Limits()
		log.Warn("rootless: container limits", "enforced", enforced, "not_enforced", not)
	}
	return withOthers(log, cfg, cgroupParent, userns, map[spec.Isolation]driver.Driver{spec.IsolationContainer: ctr}), nil
}

// withOthers adds the microVM and gVisor drivers where they work here; a
// rootless node offers no gVisor.
func withOthers(log *slog.Logger, cfg *config.Config, cgroupParent string, userns rootless.State, drivers map[spec.Isolation]driver.Driver) map[spec.Isolation]driver.Driver {
	dataDir := cfg.DataDir
	if userns.Rootless {
		log.Info("gVisor sandboxes unavailable: not offered by a rootless node")
		if vm := newQEMUDriver(log, dataDir); vm != nil {
			drivers[spec.IsolationMicroVM] = vm
		}
		return drivers
	}
	if vm := newQEMUDriver(log, dataDir); vm != nil {
		drivers[spec.IsolationMicroVM] = vm
	}
	if sb := newGVisorDriver(log, dataDir, cgroupParent, int64(cfg.DefaultDiskMiB)); sb != nil {
		drivers[spec.IsolationGVisor] = sb
	}
	return drivers
}

// newQEMUDriver returns the microVM driver, or nil (logged) when QEMU or a
// guest kernel is missing. A node with no kernel yet prepares one, as
// `hypercore vm prepare` would, so a fresh data dir still offers microVMs.
func newQEMUDriver(log *slog.Logger, dataDir string) driver.Driver {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		log.Info("microVMs unavailable: qemu-system-x86_64 not found; install qemu-system-x86")
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k, err := qemu.FindKernel(qemu.KernelDir(dataDir))
	if err != nil {
		// Tried once per data dir: a preparation that failed (no network)
		// would otherwise delay every restart, and with it the API and
		// the proxy, by its timeouts.
		failed := filepath.Join(dataDir, "vm", "kernel-prepare-failed")
		if msg, rerr := os.ReadFile(failed); rerr == nil {
			log.Warn("microVMs unavailable: no guest kernel, and preparing one failed before; run `hypercore vm prepare`", "err", string(msg))
			return nil
		}
		log.Info("no guest kernel in the data dir; preparing one", "dir", qemu.KernelDir(dataDir))
		if k, err = qemu.Prepare(ctx, qemu.PrepareOptions{CacheDir: envOr("HYPERCORE_CACHE", qemu.DefaultCacheDir), DataDir: dataDir}); err != nil {
			log.Warn("microVMs unavailable: no guest kernel; run `hypercore vm prepare`", "err", err)
			if os.MkdirAll(filepath.Dir(failed), 0o700) == nil {
				os.WriteFile(failed, []byte(err.Error()), 0o600)
			}
			return nil
		}
	}
	vm, err := qemu.New(ctx, qemu.Options{StateDir: filepath.Join(dataDir, "vms"), Kernel: k, Log: log})
	if err != nil {
		log.Warn("microVMs unavailable", "err", err)
		return nil
	}
	log.Info("microVMs available", "kernel", k.Version, "accel", vm.Accel(), "initramfs", vm.Initramfs())
	return vm
}

// newGVisorDriver returns the gVisor driver, or nil (logged) when runsc is
// missing or cannot boot a sandbox here: a probe sandbox runs once, at
// start, so that a node offers gvisor only when it works.
func newGVisorDriver(log *slog.Logger, dataDir, cgroupParent string, defaultDiskMiB int64) driver.Driver {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	version, err := gvisor.Probe(ctx, "", "")
	if err != nil {
		log.Info("gVisor sandboxes unavailable", "err", err)
		return nil
	}
	sb, err := gvisor.New(gvisor.Options{StateDir: filepath.Join(dataDir, "gvisor"), CgroupParent: cgroupParent, DefaultDiskMiB: defaultDiskMiB})
	if err != nil {
		log.Warn("gVisor sandboxes unavailable", "err", err)
		return nil
	}
	log.Info("gVisor sandboxes available", "runsc", version, "platform", gvisor.DefaultPlatform)
	return sb
}

// removeCgroupParent removes the node's cgroup parent as the daemon stops.
// Workloads that keep running across the restart keep it; a node with none
// left leaves no cgroup behind.
func removeCgroupParent(log *slog.Logger, parent string) {
	if err := runc.RemoveCgroupParent(parent); err != nil {
		log.Warn("could not remove the node's cgroup", "err", err)
	}
}
