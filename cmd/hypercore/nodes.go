package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hypercore-dev/hypercore/internal/nodeinfo"
)

func newNodesCmd(api *apiFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "List the cluster's nodes with their state, role and capacity",
		Long: `List every node the cluster knows: its gossip state (alive, failed,
left), role (server keeps the raft state, worker only runs workloads), the
current raft leader, capacity, and how many workloads are placed on it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return api.call(func(ctx context.Context, c *client) error {
				var out struct{ Nodes []nodeinfo.Member }
				if err := c.rest(ctx, http.MethodGet, "/v1/nodes", nil, http.StatusOK, &out); err != nil {
					return fmt.Errorf("list nodes: %w", err)
				}
				if asJSON {
					return printJSON(out.Nodes)
				}
				t := newTable(os.Stdout, "NAME", "STATE", "ROLE", "ADDRESS", "CORES", "MEMORY", "FREE", "WORKLOADS", "ISOLATIONS")
				for _, n := range out.Nodes {
					role := n.Role
					if n.Leader {
						role += " (leader)"
					}
					t.row(n.Name, n.State, role, n.Addr, n.Cores, fmt.Sprintf("%d MiB", n.MemoryMiB),
						fmt.Sprintf("%d MiB", n.FreeMemoryMiB), n.Workloads, strings.Join(n.Isolations, ","))
				}
				return t.flush()
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
