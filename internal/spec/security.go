package spec

import (
	"strings"
)

// Seccomp values: the runtime's default filter, or none.
const (
	SeccompDefault    = "default"
	SeccompUnconfined = "unconfined"
)

// UserNS values: a private user namespace whose root is an unprivileged
// host uid, or the host's own user namespace (root is host root).
const (
	UserNSPrivate = "private"
	UserNSHost    = "host"
)

// Security is what a workload gives up of the container sandbox's
// defaults. Both apply to isolation container (runc, crun) only: gVisor
// filters system calls and maps users itself, and a microVM has its own
// kernel.
type Security struct {
	// Seccomp is "default" (Docker's default profile) or "unconfined".
	Seccomp string `json:"seccomp"`
	// UserNS is "private" (root inside is an unprivileged host uid) or
	// "host" (root inside is host root, for images that need it).
	UserNS string `json:"userns"`
}

// IsZero reports whether s was never set, as in a spec from a node that
// predates these settings; it means the defaults.
func (s Security) IsZero() bool { return s == Security{} }

// OrDefaults is s with unset fields at their defaults, as answers show it.
func (s Security) OrDefaults() Security {
	if s.Seccomp == "" {
		s.Seccomp = SeccompDefault
	}
	if s.UserNS == "" {
		s.UserNS = UserNSPrivate
	}
	return s
}

// buildSecurity validates in and fills in the defaults.
func buildSecurity(in Security) (Security, error) {
	out := Security{Seccomp: strings.ToLower(in.Seccomp), UserNS: strings.ToLower(in.UserNS)}
	switch out.Seccomp {
	case "":
		out.Seccomp = SeccompDefault
	case SeccompDefault, SeccompUnconfined:
	default:
		return Security{}, fieldErr("security.seccomp", "%q is not default or unconfined", truncate(in.Seccomp, 40))
	}
	switch out.UserNS {
	case "":
		out.UserNS = UserNSPrivate
	case UserNSPrivate, UserNSHost:
	default:
		return Security{}, fieldErr("security.userns", "%q is not private or host", truncate(in.UserNS, 40))
	}
	return out, nil
}

// ParseSecurityOpts reads the CLI's --security-opt values, each KEY=VALUE
// with KEY seccomp or userns, as in `--security-opt seccomp=unconfined`.
func ParseSecurityOpts(opts []string) (Security, error) {
	var s Security
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		switch {
		case !ok:
			return Security{}, fieldErr("security-opt", "%q is not KEY=VALUE (seccomp=unconfined or userns=host)", truncate(o, 40))
		case k == "seccomp":
			s.Seccomp = v
		case k == "userns":
			s.UserNS = v
		default:
			return Security{}, fieldErr("security-opt", "%q: unknown key %q; use seccomp=unconfined or userns=host", truncate(o, 40), truncate(k, 20))
		}
	}
	return buildSecurity(s)
}
