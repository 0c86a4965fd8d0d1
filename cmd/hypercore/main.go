// Command hypercore is the whole product in one binary: the node daemon
// (hypercore cluster), a docker-like CLI for its API, and the guest agent
// inside microVMs (when it runs as their PID 1).
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hypercore-dev/hypercore/internal/guest"
	"github.com/hypercore-dev/hypercore/internal/rootless"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// Inside a microVM this binary is the guest's /init and agent.
	if guest.IsInit() {
		guest.Init()
	}
	if err := newRoot().Execute(); err != nil {
		if _, ok := err.(exitStatus); !ok {
			fmt.Fprintln(os.Stderr, "hypercore:", explain(err))
		}
		os.Exit(exitCode(err))
	}
}

func newRoot() *cobra.Command {
	api := &apiFlags{}
	root := &cobra.Command{
		Use:   "hypercore",
		Short: "Run OCI images as isolated workloads on a small decentralized cloud",
		Long: `hypercore turns Linux machines into a small cloud. Each machine runs a node
('hypercore cluster'); you spawn OCI images on it and each one is served at
<id>.<base-domain> by the node's built-in reverse proxy.

The CLI finds the API by itself: --addr and --token, else HYPERCORE_ADDR and
HYPERCORE_TOKEN, else the files the node wrote in --data-dir.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&api.addr, "addr", "", "API address, host:port (default: <data-dir>/api-addr, else "+defaultAPIAddr+")")
	pf.StringVar(&api.token, "token", "", "API token (default: $HYPERCORE_TOKEN, else <data-dir>/api-token)")
	pf.StringVar(&api.ca, "ca", "", "CA certificate (PEM) to trust for the API's TLS (default: $HYPERCORE_CA, else <data-dir>/cluster/pki/ca.crt when readable)")
	pf.StringVar(&api.dataDir, "data-dir", envOr("HYPERCORE_DATA_DIR", rootless.DataDir(defaultDataDir, rootless.Detect(), os.Getenv)), "node state directory")

	root.AddCommand(
		newClusterCmd(api),
		newSpawnCmd(api),
		newListCmd(api),
		newInspectCmd(api),
		newLogsCmd(api),
		newExecCmd(api),
		newAttachCmd(api),
		newStopCmd(api),
		newStartCmd(api),
		newRmCmd(api),
		newPullCmd(api),
		newImageCmd(api),
		newVolumeCmd(api),
		newInfoCmd(api),
		newNodesCmd(api),
		newTokenCmd(api),
		newVMCmd(api),
		newSecretCmd(api),
	)
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// exitStatus carries a remote process's exit code out of exec.
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func exitCode(err error) int {
	if e, ok := err.(exitStatus); ok {
		return int(e)
	}
	return 1
}
