package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// apiToken is a token as the API shows it.
type apiToken struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Scope     string    `json:"scope"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Expired   bool      `json:"expired"`
	Token     string    `json:"token,omitempty"`
}

func newTokenCmd(api *apiFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke scoped API tokens",
		Long: `Scoped API tokens, kept hashed in the cluster state so that every node
honours them. A scope includes the ones below it:

  read    list and inspect workloads and nodes, read logs
  deploy  also spawn, stop, remove, exec, attach and pull
  admin   also manage tokens and prune images

The node's api-token file is an admin token. Managing tokens needs one.`,
	}
	cmd.AddCommand(newTokenCreateCmd(api), newTokenListCmd(api), newTokenRevokeCmd(api))
	return cmd
}

func newTokenCreateCmd(api *apiFlags) *cobra.Command {
	var scope, ttl, name string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create --scope admin|deploy|read [--ttl D] [--name N]",
		Short: "Make a token and print it (it is shown only once)",
		Example: `  hypercore token create --scope read --name dashboard
  hypercore token create --scope deploy --ttl 30d --name ci`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if scope == "" {
				return fmt.Errorf("--scope is required: admin, deploy or read")
			}
			body, _ := json.Marshal(map[string]string{"scope": scope, "ttl": ttl, "name": name})
			var out apiToken
			if err := api.tokenCall(http.MethodPost, "/v1/tokens", body, http.StatusCreated, &out); err != nil {
				return fmt.Errorf("create token: %w", err)
			}
			if asJSON {
				return printJSON(out)
			}
			fmt.Println(out.Token)
			expires := "never expires"
			if !out.ExpiresAt.IsZero() {
				expires = "expires " + out.ExpiresAt.Local().Format(time.RFC3339)
			}
			fmt.Fprintf(os.Stderr, "token %s, scope %s, %s; keep it now: it is not shown again\n", out.ID, out.Scope, expires)
			return nil
		},
	}
	cmd.Flags().StringVar(&scope, "scope", "", "what the token may do: admin, deploy or read")
	cmd.Flags().StringVar(&ttl, "ttl", "", "how long it works, e.g. 12h or 30d (default: until revoked)")
	cmd.Flags().StringVar(&name, "name", "", "a label to tell it apart in 'hypercore token list'")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the answer as JSON")
	return cmd
}

func newTokenListCmd(api *apiFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out struct{ Tokens []apiToken }
			if err := api.tokenCall(http.MethodGet, "/v1/tokens", nil, http.StatusOK, &out); err != nil {
				return fmt.Errorf("list tokens: %w", err)
			}
			if asJSON {
				return printJSON(out.Tokens)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSCOPE\tNAME\tCREATED\tEXPIRES")
			for _, t := range out.Tokens {
				exp := "never"
				if !t.ExpiresAt.IsZero() {
					exp = t.ExpiresAt.Local().Format(time.RFC3339)
					if t.Expired {
						exp += " (expired)"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Scope, t.Name, t.CreatedAt.Local().Format(time.RFC3339), exp)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON")
	return cmd
}

func newTokenRevokeCmd(api *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token on every node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := api.tokenCall(http.MethodDelete, "/v1/tokens/"+args[0], nil, http.StatusOK, nil); err != nil {
				return fmt.Errorf("revoke token: %w", err)
			}
			fmt.Fprintf(os.Stderr, "revoked %s\n", args[0])
			return nil
		},
	}
}

// tokenCall makes one REST call of the token routes and decodes the answer
// into out when the status is want.
func (f *apiFlags) tokenCall(method, path string, body []byte, want int, out any) error {
	c, ctx, cancel, err := f.connect()
	if err != nil {
		return err
	}
	defer cancel()
	return c.rest(ctx, method, path, body, want, out)
}
