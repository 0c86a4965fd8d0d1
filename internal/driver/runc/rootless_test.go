package runc

import (
	"testing"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// A rootless driver's spec asks for nothing a user cannot set up: no
// cgroup, no limits (runc fails on any it cannot write), no user namespace
// of its own, and a ping_group_range within the mapped groups.
func TestRootlessSpec(t *testing.T) {
	cfg := driver.Config{ID: spec.NewID(), Spec: spec.Spec{Cores: 0.5, MemoryMiB: 64, Args: []string{"/bin/app"}}, Rootfs: testRootfs(t)}
	d := &Driver{opts: Options{StateDir: t.TempDir(), Rootless: true, MappedGIDs: 65536}}
	p := d.paths(cfg.ID)
	s, err := buildSpec(cfg, p, "/run/netns/x", false, true)
	if err != nil {
		t.Fatal(err)
	}
	s.Linux.CgroupsPath = d.cgroupPath(cfg.ID)
	d.unprivileged(s)
	if s.Linux.CgroupsPath != "" {
		t.Errorf("cgroups path %q, want none", s.Linux.CgroupsPath)
	}
	if r := s.Linux.Resources; r == nil || r.Memory != nil || r.CPU != nil || r.Pids != nil || len(r.Devices) == 0 {
		t.Errorf("resources %+v; want the device rules only", r)
	}
	if got := s.Linux.Sysctl[pingGroupRange]; got != "0 65535" {
		t.Errorf("ping_group_range %q, want 0 65535", got)
	}
	sb, err := d.sandboxFor(cfg, p)
	if err != nil || sb.hostRoot != 0 {
		t.Errorf("sandbox %+v, %v; want no user namespace of its own", sb, err)
	}
	if enforced, not := d.Limits(); len(not) == 0 || len(enforced) != 1 {
		t.Errorf("limits enforced %v, not %v", enforced, not)
	}
	cfg.Spec.DiskMiB = 100
	if err := d.setupHost(cfg, p); err == nil {
		t.Error("a disk limit was accepted by a rootless driver")
	}
}
