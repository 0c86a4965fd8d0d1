package gvisor

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/atomicfile"
)

// runtimeArgs are runsc's global flags. runsc reads its configuration from
// them on every command, so create, start, exec and kill must all get the
// same ones: the wrapper adds them to each.
func runtimeArgs(platform string) []string {
	if platform == "" {
		platform = DefaultPlatform
	}
	return []string{
		"--platform=" + platform,
		// gVisor's own network stack on the interfaces of the netns the
		// node made (the veth on the node bridge), so proxy, IPAM and
		// nftables isolation apply unchanged.
		"--network=sandbox",
		// Writes go through to the workload's overlay upper dir on the
		// host, as with the container driver, and outlive a restart.
		// runsc's default keeps them in a memory-backed overlay of its own
		// that is lost when the sandbox stops.
		"--overlay2=none",
	}
}

// wrapperScript runs runsc with its global flags. go-runc builds each
// command line itself and has no place for them, hence a script; it execs
// runsc, so nothing of it stays running.
//
// `runsc start` (and `runsc run`, which creates and starts) sets up the
// sandbox's network, and runsc up to at least
// 2024-07 refuses to when /proc/sys/net/core/rmem_default exists, taking
// that for the sign of the host's root network namespace. Since Linux 6.x
// every network namespace has that file, so on such kernels start always
// fails ("cannot run with network enabled in root network namespace"). The
// script runs start in a private mount namespace whose /proc/sys is a
// tmpfs holding every /proc/sys directory but net: the check then passes,
// and start needs nothing under /proc/sys/net. /proc/sys/net cannot be
// hidden on its own, as its entries are looked up afresh per netns and a
// mount over one is not seen from another. The mount namespace ends with
// start; a sandbox made by create never sees it. One made by run starts in
// it, with every /proc/sys directory but net, and then sets up its own
// root as always.
const wrapperScript = `#!%[1]s
# Written by hypercore's gvisor driver: runsc with the driver's flags.
set -- %[2]s "$@"
for arg; do
  if [ "$arg" = start ] || [ "$arg" = run ]; then
    exec %[3]s --mount --propagation private %[1]s -c '
      scratch=$1; shift
      mount --bind /proc/sys "$scratch" &&
        mount -t tmpfs -o mode=555 hypercore-no-sysnet /proc/sys || exit 1
      for dir in "$scratch"/*; do
        name=${dir##*/}
        [ "$name" = net ] && continue
        mkdir "/proc/sys/$name" && mount --bind "$dir" "/proc/sys/$name" || exit 1
      done
      umount -l "$scratch"
      exec "$@"' sh %[4]s "$@"
  fi
done
exec "$@"
`

// writeWrapper writes the runsc wrapper into stateDir and returns its
// path. It is named runsc, as the container driver tells runtimes apart by
// name.
func writeWrapper(runsc, stateDir, platform string) (string, error) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		return "", fmt.Errorf("gvisor driver: runsc is run through a sh script, and sh was not found: %w", err)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return "", fmt.Errorf("gvisor driver: unshare(1) not found (%w); install util-linux", err)
	}
	scratch := filepath.Join(stateDir, "proc-sys")
	if err := os.MkdirAll(scratch, 0o700); err != nil {
		return "", fmt.Errorf("gvisor driver: create %s: %w", scratch, err)
	}
	args := append([]string{runsc}, runtimeArgs(platform)...)
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = shellQuote(a)
	}
	script := fmt.Sprintf(wrapperScript, sh, strings.Join(quoted, " "), shellQuote(unshare), shellQuote(scratch))
	path := filepath.Join(stateDir, "runsc")
	if err := atomicfile.WriteFile(path, []byte(script), 0o700); err != nil {
		return "", fmt.Errorf("gvisor driver: write runsc wrapper: %w", err)
	}
	return path, nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
