package runc

import (
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hypercore-dev/hypercore/internal/driver"
)

// volumeMounts binds each of the workload's volumes at its target. runsc
// serves the same binds through its gofer, so gVisor needs nothing else.
func volumeMounts(cfg driver.Config) []specs.Mount {
	var out []specs.Mount
	for _, v := range cfg.Volumes {
		out = append(out, specs.Mount{
			Destination: v.Target, Type: "bind", Source: v.HostDir,
			Options: []string{"rbind", "rw", "nosuid", "nodev"},
		})
	}
	return out
}
