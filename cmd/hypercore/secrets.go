package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/hypercore-dev/hypercore/internal/cluster/sealed"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

func newSecretCmd(api *apiFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Set, list and remove the cluster's sealed secrets",
		Long: `Secrets are values a workload gets in its environment without them
being in its spec, the API's answers, logs, argv, the raft log or any file
on disk. The cluster keeps them sealed (AES-256-GCM, with a key every node
derives from the cluster key) and opens them only on the node that runs the
workload. See docs/security.md.

  printf %s "$DB_PASSWORD" | hypercore secret set db-password
  hypercore spawn --secret DB_PASSWORD=db-password registry.example/app:1`,
	}
	set := &cobra.Command{
		Use:   "set NAME",
		Short: "Set a secret to the value read from stdin (replacing it)",
		Long: `Set reads the value from stdin, whole (a trailing newline is kept;
use printf %s rather than echo to leave it out). Workloads that already
run keep the value they started with.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := spec.ValidateSecretName(args[0]); err != nil {
				return err
			}
			value, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), spec.MaxSecretBytes+1))
			if err != nil {
				return fmt.Errorf("read the value from stdin: %w", err)
			}
			if err := spec.ValidateSecretValue(value); err != nil {
				return err
			}
			_, err = secretCall(api, http.MethodPut, args[0], value)
			if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "secret %s set\n", args[0])
			}
			return err
		},
	}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the secrets by name (never their values)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			body, err := secretCall(api, http.MethodGet, "", nil)
			if err != nil {
				return err
			}
			var out struct{ Secrets []sealed.Info }
			if err := json.Unmarshal(body, &out); err != nil {
				return fmt.Errorf("list secrets: unreadable answer: %w", err)
			}
			if asJSON {
				return printJSON(out.Secrets)
			}
			t := newTable(cmd.OutOrStdout(), "NAME", "UPDATED")
			for _, s := range out.Secrets {
				t.row(s.Name, s.UpdatedAt.Local().Format(time.DateTime))
			}
			return t.flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a secret (workloads that run keep their value)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := spec.ValidateSecretName(args[0]); err != nil {
				return err
			}
			_, err := secretCall(api, http.MethodDelete, args[0], nil)
			if err == nil {
				fmt.Fprintf(cmd.OutOrStdout(), "secret %s removed\n", args[0])
			}
			return err
		},
	}
	cmd.AddCommand(set, list, rm)
	return cmd
}

// secretCall calls /v1/secrets[/name] and returns the answer's body, or an
// error with the API's message.
func secretCall(api *apiFlags, method, name string, body []byte) ([]byte, error) {
	c, ctx, cancel, err := api.connect()
	if err != nil {
		return nil, err
	}
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, time.Minute)
	defer cancelT()
	path := "/v1/secrets"
	if name != "" {
		path += "/" + name
	}
	var out []byte
	if err := c.rest(ctx, method, path, body, http.StatusOK, &out); err != nil {
		return nil, fmt.Errorf("secret: %w", err)
	}
	return out, nil
}

// parseSecretFlags reads --secret ENV_NAME=secret-name flags into a spec's
// secrets map.
func parseSecretFlags(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(flags))
	for _, f := range flags {
		env, name, err := spec.ParseSecretFlag(f)
		if err != nil {
			return nil, err
		}
		m[env] = name
	}
	return m, nil
}
