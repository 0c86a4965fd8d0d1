package runc

import (
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

func TestBuildSpec(t *testing.T) {
	rootfs := testRootfs(t)
	cfg := driver.Config{
		ID:     spec.NewID(),
		Spec:   spec.Spec{Cores: 0.5, MemoryMiB: 64, Env: []string{"B=spec", "C=new"}, Args: []string{"serve", "--fast"}},
		Rootfs: rootfs,
		ImageConfig: v1.Config{
			Entrypoint: []string{"/bin/app"},
			Cmd:        []string{"default-cmd"},
			Env:        []string{"A=image", "B=image"},
			WorkingDir: "/www",
			User:       "nobody",
		},
		Hostname: "web-1",
	}
	p := (&Driver{opts: Options{StateDir: "/state"}}).paths(cfg.ID)
	s, err := buildSpec(cfg, p, "/run/netns/x", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"/bin/app", "serve", "--fast"}; !slices.Equal(s.Process.Args, want) {
		t.Errorf("args %q, want %q (spec args replace the image cmd)", s.Process.Args, want)
	}
	wantEnv := []string{driver.DefaultPath, "HOSTNAME=web-1", "HOME=/", "A=image", "B=spec", "C=new"}
	if !slices.Equal(s.Process.Env, wantEnv) {
		t.Errorf("env %q, want %q", s.Process.Env, wantEnv)
	}
	if s.Process.Cwd != "/www" || s.Hostname != "web-1" {
		t.Errorf("cwd %q hostname %q", s.Process.Cwd, s.Hostname)
	}
	if u := s.Process.User; u.UID != 65534 || u.GID != 65534 {
		t.Errorf("user %+v, want nobody 65534:65534", u)
	}
	if len(s.Process.Capabilities.Effective) != 0 || len(s.Process.Capabilities.Bounding) != len(defaultCaps) {
		t.Errorf("non-root caps %+v: want only the bounding set", s.Process.Capabilities)
	}
	if !s.Process.NoNewPrivileges || s.Process.Terminal {
		t.Errorf("noNewPrivileges %v terminal %v", s.Process.NoNewPrivileges, s.Process.Terminal)
	}
	r := s.Linux.Resources
	if *r.CPU.Quota != 50000 || *r.CPU.Period != 100000 {
		t.Errorf("cpu quota/period %d/%d, want 50000/100000", *r.CPU.Quota, *r.CPU.Period)
	}
	if *r.Memory.Limit != 64<<20 || *r.Memory.Swap != 64<<20 || *r.Pids.Limit != pidsLimit {
		t.Errorf("memory %d swap %d pids %d", *r.Memory.Limit, *r.Memory.Swap, *r.Pids.Limit)
	}
	if s.Linux.CgroupsPath != "/hypercore/"+cfg.ID.String() {
		t.Errorf("cgroupsPath %q", s.Linux.CgroupsPath)
	}
	var netns string
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == "network" {
			netns = ns.Path
		}
	}
	if netns != "/run/netns/x" {
		t.Errorf("network namespace path %q, want the one given", netns)
	}
	var dests []string
	for _, m := range s.Mounts {
		dests = append(dests, m.Destination)
	}
	for _, want := range []string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"} {
		if !slices.Contains(dests, want) {
			t.Errorf("no mount at %s", want)
		}
	}
	if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
		t.Errorf("masked %q readonly %q", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
	}
	if s.Annotations[annLowerDir] != rootfs {
		t.Errorf("lowerdir annotation %q", s.Annotations[annLowerDir])
	}

	// No swap accounting: no swap limit, which runc would fail to write.
	s, err = buildSpec(cfg, p, "/run/netns/x", false, false)
	if err != nil {
		t.Fatal(err)
	}
	if s.Linux.Resources.Memory.Swap != nil {
		t.Error("swap limit set without swap accounting")
	}

	// Root gets Docker's default capabilities, and the image cmd is used
	// when the spec gives no args.
	cfg.ImageConfig.User, cfg.Spec.Args = "", nil
	s, err = buildSpec(cfg, p, "/run/netns/x", false, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Process.Capabilities.Effective) != len(defaultCaps) || !slices.Contains(s.Process.Capabilities.Effective, "CAP_NET_BIND_SERVICE") {
		t.Errorf("root caps %q", s.Process.Capabilities.Effective)
	}
	if want := []string{"/bin/app", "default-cmd"}; !slices.Equal(s.Process.Args, want) {
		t.Errorf("args %q, want %q", s.Process.Args, want)
	}
	if !slices.Contains(s.Process.Env, "HOME=/root") {
		t.Errorf("root's env %q lacks HOME=/root", s.Process.Env)
	}

	cfg.ImageConfig.Entrypoint, cfg.ImageConfig.Cmd = nil, nil
	if _, err := buildSpec(cfg, p, "", false, true); err == nil {
		t.Error("a workload with nothing to run was accepted")
	}
}
