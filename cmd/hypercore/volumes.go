package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/volume"
)

func newVolumeCmd(api *apiFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "volume",
		Short: "Manage named volumes: storage that outlives workloads",
		Long: `A volume is storage of a fixed size that lives on one node (the one that
answered create) and outlives the workloads that mount it. A workload that
mounts it (spawn -v NAME:/path) is placed on that node. A volume cannot be
removed while a workload, running or stopped, mounts it.`,
		Example: `  hypercore volume create pgdata --size 2048
  hypercore spawn -v pgdata:/var/lib/postgresql/data -e POSTGRES_PASSWORD=x postgres:16`,
	}
	var size int64
	create := &cobra.Command{
		Use:   "create NAME",
		Short: "Make an empty volume on the node that answers",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := spec.ValidateVolumeName(args[0]); err != nil {
				return err
			}
			if _, err := spec.VolumeSize(size); err != nil {
				return fmt.Errorf("--size: %w", err)
			}
			return api.call(func(ctx context.Context, c *client) error {
				res, err := c.volumes.CreateVolume(ctx, connect.NewRequest(&v1.CreateVolumeRequest{Name: args[0], SizeMib: size}))
				if err != nil {
					return err
				}
				fmt.Println(res.Msg.Volume.Name)
				return nil
			})
		},
	}
	create.Flags().Int64Var(&size, "size", 0, fmt.Sprintf("size in MiB; writes past it fail (default %d)", spec.DefaultVolumeMiB))

	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List volumes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return api.call(func(ctx context.Context, c *client) error {
				res, err := c.volumes.ListVolumes(ctx, connect.NewRequest(&v1.ListVolumesRequest{}))
				if err != nil {
					return err
				}
				t := newTable(os.Stdout, "NAME", "NODE", "SIZE", "USED BY")
				for _, v := range res.Msg.Volumes {
					t.row(v.Name, v.Node, fmt.Sprintf("%d MiB", v.SizeMib), strings.Join(v.UsedBy, ","))
				}
				return t.flush()
			})
		},
	}
	inspect := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a volume as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := spec.ValidateVolumeName(args[0]); err != nil {
				return err
			}
			return api.call(func(ctx context.Context, c *client) error {
				res, err := c.volumes.GetVolume(ctx, connect.NewRequest(&v1.GetVolumeRequest{Name: args[0]}))
				if err != nil {
					return err
				}
				v := res.Msg.Volume
				// The REST API's shape, used_by a list even when empty.
				return printJSON(volume.Info{
					Record: volume.Record{Name: v.Name, Node: v.Node, SizeMiB: v.SizeMib, CreatedAt: v.GetCreatedAt().AsTime()},
					UsedBy: append([]string{}, v.UsedBy...),
				})
			})
		},
	}
	rm := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Delete volumes and their data (refused while a workload mounts one)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, name := range args {
				if err := spec.ValidateVolumeName(name); err != nil {
					return err
				}
			}
			return api.call(func(ctx context.Context, c *client) error {
				for _, name := range args {
					if _, err := c.volumes.RemoveVolume(ctx, connect.NewRequest(&v1.RemoveVolumeRequest{Name: name})); err != nil {
						return fmt.Errorf("%s: %w", name, explain(err))
					}
					fmt.Println(name)
				}
				return nil
			})
		},
	}
	cmd.AddCommand(create, list, inspect, rm)
	return cmd
}
