package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/hypercore-dev/hypercore/internal/driver/qemu"
)

// newVMCmd groups what the node needs for microVMs.
func newVMCmd(api *apiFlags) *cobra.Command {
	vm := &cobra.Command{
		Use:   "vm",
		Short: "Prepare this machine for microVM workloads",
	}
	var cacheDir, deb string
	prepare := &cobra.Command{
		Use:   "prepare",
		Short: "Fetch and unpack the guest kernel for microVMs",
		Long: `Fetches Debian's cloud kernel (` + qemu.KernelPackage + `) with apt into the
cache dir, unpacks its image and the modules the guest agent needs, and
installs them into <data-dir>/vm/kernel/<version>/. It does nothing that is
already done, so it is cheap to run before every start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, err := qemu.Prepare(cmd.Context(), qemu.PrepareOptions{
				CacheDir: cacheDir, DataDir: api.dataDir, Deb: deb,
				Log: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "vm prepare: "+format+"\n", args...) },
			})
			if err != nil {
				return fmt.Errorf("vm prepare: %w", err)
			}
			fmt.Printf("guest kernel %s in %s\n", k.Version, k.Dir)
			return nil
		},
	}
	prepare.Flags().StringVar(&cacheDir, "cache-dir", envOr("HYPERCORE_CACHE", qemu.DefaultCacheDir), "where downloaded kernels are kept, shared by data dirs")
	prepare.Flags().StringVar(&deb, "deb", "", "use this kernel .deb instead of asking apt")
	vm.AddCommand(prepare)
	return vm
}
