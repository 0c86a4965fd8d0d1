package runc

import (
	"fmt"

	seccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// seccompProfile is Docker's default seccomp profile, from the package
// Docker itself builds it with, for a process with s's capabilities: it
// allows the calls the capabilities grant anyway (a CAP_SYS_ADMIN process
// may mount) and denies with EPERM everything else outside its list, such
// as unshare and clone of new namespaces, mount, keyctl, bpf, kernel
// modules and clock setting.
func seccompProfile(s *specs.Spec) (*specs.LinuxSeccomp, error) {
	p, err := seccomp.GetDefaultProfile(s)
	if err != nil {
		return nil, fmt.Errorf("build the default seccomp profile: %w", err)
	}
	return p, nil
}
