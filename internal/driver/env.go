package driver

import "strings"

// MergeEnv merges KEY=VALUE lists, such as the image's env and then the
// spec's: a later list's value for a key replaces an earlier one in place,
// new keys are appended in order, and entries without a key are dropped.
func MergeEnv(lists ...[]string) []string {
	var out []string
	index := map[string]int{}
	for _, l := range lists {
		for _, kv := range l {
			k, _, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				continue
			}
			if i, seen := index[k]; seen {
				out[i] = kv
				continue
			}
			index[k] = len(out)
			out = append(out, kv)
		}
	}
	return out
}

// HasEnv reports whether env sets key.
func HasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// DefaultPath is the PATH a workload starts with; the image's env may
// replace it.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ProcessArgs is the entrypoint followed by the spec's args, or the image's
// cmd when the spec gives none, as docker run does.
func ProcessArgs(cfg Config) []string {
	cmd := cfg.ImageConfig.Cmd
	if len(cfg.Spec.Args) > 0 {
		cmd = cfg.Spec.Args
	}
	return append(append([]string{}, cfg.ImageConfig.Entrypoint...), cmd...)
}

// ProcessEnv is the workload's main process environment: the defaults
// (PATH, HOSTNAME, HOME), then the image's env, then the spec's, each
// winning over the one before; a terminal gets TERM=xterm unless set.
func ProcessEnv(cfg Config, home string) []string {
	env := MergeEnv([]string{DefaultPath, "HOSTNAME=" + HostnameOf(cfg), "HOME=" + home}, cfg.ImageConfig.Env, cfg.Spec.Env)
	if cfg.Spec.Tty && !HasEnv(env, "TERM") {
		env = append(env, "TERM=xterm")
	}
	return env
}
