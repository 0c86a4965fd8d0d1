package runc

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/atomicfile"
)

// crunCommand returns the command the driver runs as crun. crun 1.8 refuses
// a hybrid cgroup layout (v1 controllers plus an empty v2 hierarchy at
// /sys/fs/cgroup/unified) outright. On such hosts crun is run through a
// small wrapper that gives it a private mount namespace with the v2
// hierarchy unmounted, so crun sees plain v1. The container crun creates
// gets a mount namespace of its own as usual, so it outlives the wrapper.
func crunCommand(crun, stateDir string) (string, error) {
	if detectCgroups() != cgroupHybrid {
		return crun, nil
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return "", fmt.Errorf("crun on a hybrid cgroup host needs unshare(1): %w; install util-linux", err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		return "", fmt.Errorf("crun on a hybrid cgroup host needs sh: %w", err)
	}
	script := fmt.Sprintf(`#!%s
# Written by hypercore: crun refuses hybrid cgroups, so hide the v2
# hierarchy from it in a private mount namespace.
exec %s --mount --propagation private %s -c 'umount %s/unified 2>/dev/null; exec "$0" "$@"' %s "$@"
`, sh, shellQuote(unshare), shellQuote(sh), cgroupRoot, shellQuote(crun))
	path := filepath.Join(stateDir, "crun-hybrid-wrapper")
	if err := atomicfile.WriteFile(path, []byte(script), 0o700); err != nil {
		return "", fmt.Errorf("write crun wrapper: %w", err)
	}
	return path, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
