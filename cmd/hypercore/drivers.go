package main

import (
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/runc"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// newDrivers builds one driver per isolation this node can offer. The
// container driver is required; the others are added when their tools are
// present, so a node advertises only what it can really run.
func newDrivers(log *slog.Logger, dataDir string, d *daemonFlags) (map[spec.Isolation]driver.Driver, error) {
	ctr, err := runc.New(runc.Options{Runtime: d.runtime, StateDir: filepath.Join(dataDir, "containers"), CgroupParent: cgroupParent(d)})
	if err != nil {
		return nil, err
	}
	drivers := map[spec.Isolation]driver.Driver{spec.IsolationContainer: ctr}
	return drivers, nil
}

// cgroupParent puts each node's workloads under a cgroup of its own, so
// nodes sharing a kernel (several test nodes on one machine) never touch
// each other's workloads.
func cgroupParent(d *daemonFlags) string {
	name := d.nodeName
	if name == "" {
		name, _ = os.Hostname()
	}
	return "/hypercore/" + name
}
