package main

import (
	"context"
	"fmt"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
)

// newImageCmd groups the verbs that manage a node's image store. 'pull'
// stays a top-level verb, as in docker.
func newImageCmd(api *apiFlags) *cobra.Command {
	img := &cobra.Command{
		Use:   "image",
		Short: "Manage the node's image store",
	}
	var jsonOut bool
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Delete the images no workload on the node uses",
		Long: `Delete every image that no workload on the node uses, with its layers,
unpacked rootfs and microVM disk. A workload in any state keeps its image,
since a stopped one may start again; an image pulled with 'hypercore pull'
and not spawned yet is deleted. A spawn under way keeps its image.

The node does this by itself every --image-gc-interval (1h by default). In a
cluster each node has its own images: this prunes the node --addr names.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return api.call(func(ctx context.Context, c *client) error {
				res, err := c.nodes.PruneImages(ctx, connect.NewRequest(&v1.PruneImagesRequest{}))
				if err != nil {
					return err
				}
				if jsonOut {
					removed := res.Msg.Removed
					if removed == nil {
						removed = []string{}
					}
					return printJSON(struct {
						Removed    []string `json:"removed"`
						FreedBytes int64    `json:"freed_bytes"`
					}{removed, res.Msg.FreedBytes})
				}
				for _, d := range res.Msg.Removed {
					fmt.Println("deleted", d)
				}
				fmt.Printf("%d images deleted, %s freed\n", len(res.Msg.Removed), humanBytes(res.Msg.FreedBytes))
				return nil
			})
		},
	}
	prune.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	img.AddCommand(prune)
	return img
}
