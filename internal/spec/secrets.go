package spec

import (
	"regexp"
	"slices"
	"strings"
)

// Limits on sealed secrets.
const (
	// MaxSecrets bounds how many secrets one workload names.
	MaxSecrets = 64
	// MaxSecretBytes bounds one secret's value.
	MaxSecretBytes = 64 << 10
	// MaxSecretNameLen bounds a secret's name.
	MaxSecretNameLen = 63
)

var secretName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// ValidateSecretName checks a secret's name: 1 to 63 of a-z, 0-9 and
// "_.-", starting with a letter or digit. It is also the file name under
// /run/secrets in the workload.
func ValidateSecretName(name string) error {
	if len(name) == 0 || len(name) > MaxSecretNameLen || !secretName.MatchString(name) {
		return fieldErr("name", "secret name %q must be 1-%d of a-z, 0-9 and _.-, starting with a letter or digit", truncate(name, 80), MaxSecretNameLen)
	}
	return nil
}

// ValidateSecretValue checks a secret's value: not empty, at most
// MaxSecretBytes, and no NUL (it becomes an environment variable).
func ValidateSecretValue(v []byte) error {
	switch {
	case len(v) == 0:
		return fieldErr("value", "is empty; pipe the value into `hypercore secret set NAME`")
	case len(v) > MaxSecretBytes:
		return fieldErr("value", "is %d bytes; at most %d are allowed", len(v), MaxSecretBytes)
	case slices.Contains(v, 0):
		return fieldErr("value", "contains a NUL byte, which an environment variable cannot hold")
	}
	return nil
}

// ParseSecretFlag splits a CLI --secret ENV_NAME=secret-name.
func ParseSecretFlag(s string) (env, name string, err error) {
	env, name, ok := strings.Cut(s, "=")
	if !ok || env == "" || name == "" {
		return "", "", fieldErr("secrets", "--secret %q must look like ENV_NAME=secret-name", truncate(s, 80))
	}
	return env, name, nil
}

// buildSecrets checks a spec's secrets, {"ENV_NAME": "secret-name"}: each
// key a valid environment name not also set by env, each value a valid
// secret name, and the isolation one that can take them (container or
// microvm).
func buildSecrets(in map[string]string, s Spec) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > MaxSecrets {
		return nil, fieldErr("secrets", "has %d entries; at most %d are allowed", len(in), MaxSecrets)
	}
	if s.Isolation == IsolationGVisor {
		return nil, fieldErr("secrets", "isolation gvisor cannot take secrets yet; use isolation container or microvm")
	}
	out := make(map[string]string, len(in))
	for env, name := range in {
		if !envKey.MatchString(env) || len(env) > 256 {
			return nil, fieldErr("secrets", "key %q must be an environment variable name (letters, digits and _)", truncate(env, 80))
		}
		if err := ValidateSecretName(name); err != nil {
			return nil, fieldErr("secrets", "%s: %s", env, err.(*FieldError).Msg)
		}
		for _, kv := range s.Env {
			if k, _, _ := strings.Cut(kv, "="); k == env {
				return nil, fieldErr("secrets", "%s is set by env too; set it in one place", env)
			}
		}
		out[env] = name
	}
	return out, nil
}

// SecretNames returns the distinct secret names s uses, sorted.
func (s Spec) SecretNames() []string {
	var names []string
	for _, n := range s.Secrets {
		names = append(names, n)
	}
	slices.Sort(names)
	return slices.Compact(names)
}
