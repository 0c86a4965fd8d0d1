package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"

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
			c, ctx, cancel, err := api.connect()
			if err != nil {
				return err
			}
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/nodes", nil)
			if err != nil {
				return err
			}
			resp, err := c.http.Do(req)
			if err != nil {
				return fmt.Errorf("no hypercore node answers at %s: %w", c.base, err)
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				var e struct{ Error string }
				json.Unmarshal(body, &e)
				return fmt.Errorf("list nodes: %s: %s", resp.Status, e.Error)
			}
			var out struct{ Nodes []nodeinfo.Member }
			if err := json.Unmarshal(body, &out); err != nil {
				return fmt.Errorf("list nodes: unreadable answer: %w", err)
			}
			if asJSON {
				return printJSON(out.Nodes)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tROLE\tADDRESS\tCORES\tMEMORY\tFREE\tWORKLOADS\tISOLATIONS")
			for _, n := range out.Nodes {
				role := n.Role
				if n.Leader {
					role += " (leader)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%g\t%d MiB\t%d MiB\t%d\t%s\n", n.Name, n.State, role, n.Addr,
					n.Cores, n.MemoryMiB, n.FreeMemoryMiB, n.Workloads, strings.Join(n.Isolations, ","))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
