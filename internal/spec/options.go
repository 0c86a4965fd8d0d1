package spec

import (
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Restart policies: what a node does when a workload's process exits by
// itself. The zero value is RestartNo.
const (
	RestartNo        = "no"
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
)

// Limits on the options that change the image's config.
const (
	MaxVolumes       = 16
	MaxRestartCount  = 1_000_000
	MaxUserBytes     = 256
	MaxPathBytes     = 4096
	MaxVolumeNameLen = 63
)

// RestartPolicy is a parsed restart option: Mode is RestartNo,
// RestartAlways or RestartOnFailure, and Max, for on-failure only, the
// most restarts in a row (0: no limit).
type RestartPolicy struct {
	Mode string
	Max  int
}

// ParseRestart reads "no", "always", "on-failure" or "on-failure:MAX", as
// Docker's --restart takes them ("" is "no").
func ParseRestart(s string) (RestartPolicy, error) {
	mode, maxStr, hasMax := strings.Cut(strings.TrimSpace(strings.ToLower(s)), ":")
	switch mode {
	case "", RestartNo:
		mode = RestartNo
	case RestartAlways, RestartOnFailure:
	default:
		return RestartPolicy{}, fieldErr("restart", "%q is not no, always, on-failure or on-failure:MAX", truncate(s, 40))
	}
	p := RestartPolicy{Mode: mode}
	if hasMax {
		if mode != RestartOnFailure {
			return RestartPolicy{}, fieldErr("restart", "%q: only on-failure takes a maximum (on-failure:5)", truncate(s, 40))
		}
		n, err := strconv.Atoi(maxStr)
		if err != nil || n < 1 || n > MaxRestartCount {
			return RestartPolicy{}, fieldErr("restart", "maximum %q is not a count from 1 to %d", truncate(maxStr, 20), MaxRestartCount)
		}
		p.Max = n
	}
	return p, nil
}

// String writes p as ParseRestart reads it; RestartNo is "".
func (p RestartPolicy) String() string {
	switch {
	case p.Mode == RestartNo || p.Mode == "":
		return ""
	case p.Max > 0:
		return p.Mode + ":" + strconv.Itoa(p.Max)
	}
	return p.Mode
}

// Restarts says whether a process that exited with code, after restarts
// restarts in a row, is started again.
func (p RestartPolicy) Restarts(code, restarts int) bool {
	switch p.Mode {
	case RestartAlways:
		return true
	case RestartOnFailure:
		return code != 0 && (p.Max == 0 || restarts < p.Max)
	}
	return false
}

// RestartPolicy returns the spec's restart policy; the spec was validated,
// so it parses.
func (s Spec) RestartPolicy() RestartPolicy {
	p, _ := ParseRestart(s.Restart)
	return p
}

var volumeName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*$`)

// ValidateVolumeName checks a volume name: lowercase letters, digits, '_',
// '.' and '-', starting with a letter or digit, at most 63 long, so it is
// also a safe file name.
func ValidateVolumeName(name string) error {
	if len(name) == 0 || len(name) > MaxVolumeNameLen || !volumeName.MatchString(name) {
		return fieldErr("volume", "%q is not a volume name: use 1-%d lowercase letters, digits, '_', '.' and '-', starting with a letter or digit",
			truncate(name, 80), MaxVolumeNameLen)
	}
	return nil
}

// ParseVolumeFlag reads the CLI's -v NAME:/path.
func ParseVolumeFlag(v string) (name, target string, err error) {
	name, target, ok := strings.Cut(v, ":")
	if !ok {
		return "", "", fieldErr("volumes", "-v %q: want NAME:/path, for example -v pgdata:/var/lib/postgresql/data", truncate(v, 80))
	}
	return name, target, nil
}

// buildVolumes checks the volume mounts: known-good names, absolute clean
// paths other than /, and no path mounted twice.
func buildVolumes(in map[string]string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	if len(in) > MaxVolumes {
		return nil, fieldErr("volumes", "has %d entries; at most %d are allowed", len(in), MaxVolumes)
	}
	out := make(map[string]string, len(in))
	seen := map[string]string{}
	names := make([]string, 0, len(in))
	for n := range in {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := ValidateVolumeName(n); err != nil {
			return nil, fieldErr("volumes", "%s", err.(*FieldError).Msg)
		}
		p := in[n]
		if len(p) > MaxPathBytes || !path.IsAbs(p) || path.Clean(p) != p || p == "/" || strings.ContainsRune(p, 0) {
			return nil, fieldErr("volumes", "volume %s: mount path %q must be an absolute, clean path other than /, such as /data", n, truncate(p, 80))
		}
		if other, dup := seen[p]; dup {
			return nil, fieldErr("volumes", "volumes %s and %s are both mounted at %s", other, n, p)
		}
		seen[p] = n
		out[n] = p
	}
	return out, nil
}

// buildImageOverrides checks the options that replace the image's
// ENTRYPOINT, WORKDIR and USER.
func buildImageOverrides(in Input, s *Spec) error {
	var err error
	if s.Entrypoint, err = validateArgs(in.Entrypoint); err != nil {
		return fieldErr("entrypoint", "%s", err.(*FieldError).Msg)
	}
	if w := in.Workdir; w != "" {
		if len(w) > MaxPathBytes || !path.IsAbs(w) || strings.ContainsRune(w, 0) {
			return fieldErr("workdir", "%q must be an absolute path, such as /app", truncate(w, 80))
		}
		s.Workdir = path.Clean(w)
	}
	if u := in.User; u != "" {
		if err := ValidateUser(u); err != nil {
			return err
		}
		s.User = u
	}
	return nil
}

var userPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$`)

// ValidateUser checks a user as --user takes it: a name or uid, optionally
// followed by :group or :gid.
func ValidateUser(u string) error {
	if len(u) > MaxUserBytes || !userPattern.MatchString(u) {
		return fieldErr("user", "%q is not a user: give a name or uid, optionally with :group or :gid (1000:1000)", truncate(u, 80))
	}
	return nil
}

// Volume sizes, in MiB: ext4 needs a few MiB of its own, and the upper
// bound keeps a typo from filling a disk (sparse files grow as written).
const (
	MinVolumeMiB     = 16
	MaxVolumeMiB     = 16 << 20 // 16 TiB
	DefaultVolumeMiB = 1024
)

// VolumeSize checks a volume size from the network; 0 is the default.
func VolumeSize(mib int64) (int64, error) {
	if mib == 0 {
		return DefaultVolumeMiB, nil
	}
	if mib < MinVolumeMiB || mib > MaxVolumeMiB {
		return 0, fieldErr("size_mib", "%d MiB is outside %d-%d MiB", mib, MinVolumeMiB, MaxVolumeMiB)
	}
	return mib, nil
}

// ValidateExecAs checks exec's --user and --workdir; both may be empty.
func ValidateExecAs(user, workdir string) error {
	if user != "" {
		if err := ValidateUser(user); err != nil {
			return err
		}
	}
	if workdir != "" && (len(workdir) > MaxPathBytes || !path.IsAbs(workdir) || strings.ContainsRune(workdir, 0)) {
		return fieldErr("workdir", "%q must be an absolute path, such as /app", truncate(workdir, 80))
	}
	return nil
}
