package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// connectFor is connect for verbs that act on one workload: the id is
// checked first, so a typo fails before any network call.
func (f *apiFlags) connectFor(id string) (*client, context.Context, context.CancelFunc, error) {
	if err := spec.ValidateID(id); err != nil {
		return nil, nil, nil, err
	}
	return f.connect()
}

// connect returns a client of the node's API and a context that Ctrl-C
// cancels, so a long call stops cleanly.
func (f *apiFlags) connect() (*client, context.Context, context.CancelFunc, error) {
	c, err := f.client()
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	return c, ctx, cancel, nil
}

// call connects as connect does and runs fn, for a command that is one
// exchange with the API.
func (f *apiFlags) call(fn func(ctx context.Context, c *client) error) error {
	c, ctx, cancel, err := f.connect()
	if err != nil {
		return err
	}
	defer cancel()
	return fn(ctx, c)
}

func newSpawnCmd(api *apiFlags) *cobra.Command {
	var (
		ports              []string
		env                []string
		secrets            []string
		cores              float64
		memory, disk       int64
		isolation, file    string
		egress             []string
		imageRef           string
		tty, dryRun, quiet bool
		jsonOut, detach    bool
		securityOpts       []string
		opts               imageOptions
	)
	cmd := &cobra.Command{
		Use:   "spawn [flags] IMAGE [-- ARGS...]",
		Short: "Run an OCI image as a workload and print its id and URL",
		Long: `Spawn pulls IMAGE (with a progress bar) and runs it on the cluster.

  hypercore spawn --ports 80:8080 --cores 1 --memory 128 registry.example/web:1
  hypercore spawn -f hac.toml

--ports maps a public port on every node to a port inside the workload.
Ports 80 and 443 are served by the HTTP(S) proxy at <id>.<base-domain>.
Without --ports, the image's lowest exposed TCP port (EXPOSE 8080) is
served behind 80 and 443. If the workload does not listen on its port
within the node's ready timeout (15 s), spawn says which ports it listens
on and exits 1, unless --detach.
Arguments after -- replace the image's command.`,
		Example: "  hypercore spawn --ports 443:3000 -e KEY=value registry.example/app:1",
		RunE: func(cmd *cobra.Command, args []string) error {
			var ps *v1.WorkloadSpec
			if file != "" {
				data, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				s, err := spec.ParseHAC(data)
				if err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
				ps = specToProto(s)
			} else {
				if imageRef == "" && len(args) > 0 {
					imageRef, args = args[0], args[1:]
				}
				args = dropDashes(args)
				pm, err := parsePortFlags(ports)
				if err != nil {
					return err
				}
				sm, err := parseSecretFlags(secrets)
				if err != nil {
					return err
				}
				sec, err := spec.ParseSecurityOpts(securityOpts)
				if err != nil {
					return err
				}
				ps = &v1.WorkloadSpec{ImageRef: imageRef, Cores: cores, Memory: memory, Disk: disk, Ports: pm, Env: env, Isolation: isolation, Tty: tty, Egress: egress, Secrets: sm,
					Security: &v1.Security{Seccomp: sec.Seccomp, Userns: sec.UserNS}}
				if len(args) > 0 {
					ps.Args = args
				}
				if err := opts.apply(ps); err != nil {
					return err
				}
			}
			// Validate here too, so a typo fails before any network call.
			if _, err := spec.Build(protoInput(ps)); err != nil {
				return err
			}
			c, ctx, cancel, err := api.connect()
			if err != nil {
				return err
			}
			defer cancel()
			if !dryRun {
				if err := pullWithProgress(ctx, c, ps.ImageRef, quiet || jsonOut); err != nil {
					return err
				}
			}
			res, err := c.workloads.Spawn(ctx, connect.NewRequest(&v1.SpawnRequest{Spec: ps, DryRun: dryRun}))
			if err != nil {
				return err
			}
			m := res.Msg
			switch {
			case jsonOut:
				return printJSON(map[string]string{"id": m.Id, "url": m.Url, "node": m.Node})
			case quiet:
				fmt.Println(m.Id)
			case dryRun:
				fmt.Printf("valid; would run on node %s\n", m.Node)
			default:
				fmt.Printf("id:   %s\nurl:  %s\nnode: %s\n", m.Id, m.Url, m.Node)
			}
			if w := m.GetWorkload(); !dryRun && !detach && w.GetState() == "running" && !w.GetReady() && w.GetError() != "" {
				return fmt.Errorf("workload %s runs but its URL answers 503: %s (it keeps running; spawn with --detach not to wait for it)", m.Id, w.GetError())
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false)
	f.StringSliceVarP(&ports, "ports", "p", nil, "PUBLIC:TARGET port map, repeatable or comma-separated (prefix tcp: for raw TCP)")
	f.StringArrayVarP(&env, "env", "e", nil, "KEY=VALUE environment variable, repeatable")
	f.StringArrayVar(&secrets, "secret", nil, "ENV_NAME=secret-name: put a sealed secret (hypercore secret set) in the environment, repeatable")
	f.Float64Var(&cores, "cores", 0, fmt.Sprintf("CPU cores, fractions allowed (default %d)", spec.DefaultCores))
	f.Int64Var(&memory, "memory", 0, fmt.Sprintf("memory in MiB (default %d)", spec.DefaultMemoryMiB))
	f.Int64Var(&disk, "disk", 0, "most MiB the workload may write (its writable layer); past it writes fail with ENOSPC (default: the node's --default-disk)")
	f.StringVar(&isolation, "isolation", "", "container (default), gvisor or microvm")
	f.StringSliceVar(&egress, "egress", nil, "CIDR the workload may reach although the node's egress policy blocks it (such as 169.254.169.254/32), repeatable or comma-separated")
	f.StringVarP(&file, "file", "f", "", "read the spec from a hac.toml file")
	f.StringVar(&imageRef, "image-ref", "", "image reference (instead of the IMAGE argument)")
	f.BoolVarP(&tty, "tty", "t", false, "give the main process a terminal (for attach)")
	f.StringArrayVar(&securityOpts, "security-opt", nil, "give up part of the container sandbox, repeatable: seccomp=unconfined (no system call filter), userns=host (root inside is host root); see docs/security.md")
	f.BoolVar(&dryRun, "dry-run", false, "validate and place, start nothing")
	f.BoolVarP(&quiet, "quiet", "q", false, "print only the id")
	f.BoolVar(&jsonOut, "json", false, "print the answer as JSON")
	f.BoolVarP(&detach, "detach", "d", false, "exit 0 even if the workload does not listen on its port in time")
	opts.flags(f)
	return cmd
}

func protoInput(p *v1.WorkloadSpec) spec.Input {
	return spec.Input{Image: p.ImageRef, Cores: p.Cores, MemoryMiB: p.Memory, DiskMiB: p.Disk, Ports: p.Ports, Env: p.Env, Args: p.Args, Isolation: p.Isolation, Tty: p.Tty, Egress: p.Egress, Secrets: p.Secrets,
		Security: spec.Security{Seccomp: p.GetSecurity().GetSeccomp(), UserNS: p.GetSecurity().GetUserns()},
		Restart:  p.Restart, Volumes: p.Volumes, Entrypoint: p.Entrypoint, Workdir: p.Workdir, User: p.User}
}

// specToProto is the request for a Spec already built (from hac.toml),
// its ports written by the API's own port codec.
func specToProto(s spec.Spec) *v1.WorkloadSpec {
	ports := map[string]int64{}
	for k, v := range spec.PortKeys(s.Ports) {
		ports[k] = int64(v)
	}
	return &v1.WorkloadSpec{ImageRef: s.Image, Cores: s.Cores, Memory: s.MemoryMiB, Disk: s.DiskMiB, Ports: ports, Env: s.Env, Args: s.Args, Isolation: string(s.Isolation), Tty: s.Tty, Egress: spec.EgressStrings(s.Egress), Secrets: s.Secrets,
		Security: &v1.Security{Seccomp: s.Security.Seccomp, Userns: s.Security.UserNS},
		Restart:  s.Restart, Volumes: s.Volumes, Entrypoint: s.Entrypoint, Workdir: s.Workdir, User: s.User}
}

// parsePortFlags reads "443:3000" and "tcp:5432:5432" into the API's map.
func parsePortFlags(flags []string) (map[string]int64, error) {
	m := map[string]int64{}
	for _, f := range flags {
		i := strings.LastIndexByte(f, ':')
		if i < 0 {
			return nil, fmt.Errorf("--ports %q: want PUBLIC:TARGET, for example 443:3000", f)
		}
		target, err := strconv.ParseInt(f[i+1:], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--ports %q: target port %q is not a number", f, f[i+1:])
		}
		m[f[:i]] = target
	}
	return m, nil
}

// pullWithProgress pulls ref on the node, drawing a progress bar on a
// terminal and nothing otherwise.
func pullWithProgress(ctx context.Context, c *client, ref string, quiet bool) error {
	stream, err := c.workloads.Pull(ctx, connect.NewRequest(&v1.PullRequest{ImageRef: ref}))
	if err != nil {
		return err
	}
	defer stream.Close()
	show := !quiet && term.IsTerminal(int(os.Stderr.Fd()))
	last := time.Time{}
	for stream.Receive() {
		m := stream.Msg()
		if m.Done {
			if show {
				fmt.Fprintf(os.Stderr, "\r\x1b[Kpulled %s %s\n", ref, m.Digest)
			}
			return nil
		}
		if show && m.TotalBytes > 0 && time.Since(last) > 100*time.Millisecond {
			last = time.Now()
			fmt.Fprintf(os.Stderr, "\rpulling %s %s", ref, bar(m.CompleteBytes, m.TotalBytes))
		}
	}
	return stream.Err()
}

func bar(done, total int64) string {
	const width = 30
	n := int(done * width / max(total, 1))
	n = min(max(n, 0), width)
	return fmt.Sprintf("[%s%s] %5.1f%% of %s", strings.Repeat("=", n), strings.Repeat(" ", width-n), float64(done)*100/float64(max(total, 1)), humanBytes(total))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func newPullCmd(api *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "pull IMAGE",
		Short: "Fetch an image into the node's store (always asks the registry)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return api.call(func(ctx context.Context, c *client) error {
				return pullWithProgress(ctx, c, args[0], false)
			})
		},
	}
}

func newListCmd(api *apiFlags) *cobra.Command {
	var jsonOut, quiet bool
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls", "ps"},
		Short:   "List workloads",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return api.call(func(ctx context.Context, c *client) error {
				res, err := c.workloads.List(ctx, connect.NewRequest(&v1.ListRequest{}))
				if err != nil {
					return err
				}
				if jsonOut {
					views := make([]workloadView, 0, len(res.Msg.Workloads))
					for _, w := range res.Msg.Workloads {
						views = append(views, viewOf(w))
					}
					return printJSON(views)
				}
				if quiet {
					for _, w := range res.Msg.Workloads {
						fmt.Println(w.Id)
					}
					return nil
				}
				t := newTable(os.Stdout, "ID", "IMAGE", "STATE", "RESTARTS", "NODE", "PORTS", "SANDBOX", "URL")
				for _, w := range res.Msg.Workloads {
					t.row(w.Id, w.Spec.GetImageRef(), stateOf(w), w.Restarts, w.Node, portsOf(w.Spec), sandboxOf(w.Spec), w.Url)
				}
				return t.flush()
			})
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only ids")
	return cmd
}

func stateOf(w *v1.Workload) string {
	switch {
	case w.State == "running" && !w.Ready:
		return "running (not ready)"
	case w.State == "exited" && w.Error == "":
		return fmt.Sprintf("exited (%d)", w.ExitCode)
	}
	return w.State
}

// sandboxOf names what a workload gave up of the container sandbox, or
// "default" when nothing.
func sandboxOf(s *v1.WorkloadSpec) string {
	sec := spec.Security{Seccomp: s.GetSecurity().GetSeccomp(), UserNS: s.GetSecurity().GetUserns()}.OrDefaults()
	var parts []string
	if sec.Seccomp != spec.SeccompDefault {
		parts = append(parts, "seccomp="+sec.Seccomp)
	}
	if sec.UserNS != spec.UserNSPrivate {
		parts = append(parts, "userns="+sec.UserNS)
	}
	if len(parts) == 0 {
		return "default"
	}
	return strings.Join(parts, ",")
}

func portsOf(s *v1.WorkloadSpec) string {
	var parts []string
	for k, v := range s.GetPorts() {
		parts = append(parts, fmt.Sprintf("%s->%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func newInspectCmd(api *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect ID",
		Short: "Show everything known about a workload, as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := api.connectFor(args[0])
			if err != nil {
				return err
			}
			defer cancel()
			res, err := c.workloads.Get(ctx, connect.NewRequest(&v1.GetRequest{Id: args[0]}))
			if err != nil {
				return err
			}
			return printJSON(viewOf(res.Msg.Workload))
		},
	}
}

func newLogsCmd(api *apiFlags) *cobra.Command {
	var follow bool
	var tail int32
	cmd := &cobra.Command{
		Use:   "logs [-f] ID",
		Short: "Print a workload's output (stdout and stderr)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, cancel, err := api.connectFor(args[0])
			if err != nil {
				return err
			}
			defer cancel()
			stream, err := c.workloads.Logs(ctx, connect.NewRequest(&v1.LogsRequest{Id: args[0], Follow: follow, Tail: tail}))
			if err != nil {
				return err
			}
			defer stream.Close()
			for stream.Receive() {
				os.Stdout.Write(stream.Msg().Data)
			}
			if err := stream.Err(); err != nil && ctx.Err() == nil {
				return err
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output")
	cmd.Flags().Int32Var(&tail, "tail", 0, "start this many lines from the end (0: all)")
	return cmd
}

func newStopCmd(api *apiFlags) *cobra.Command {
	var timeout int32
	cmd := &cobra.Command{
		Use:   "stop ID...",
		Short: "Stop workloads (SIGTERM, then SIGKILL after --timeout); records and logs stay",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachID(api, args, func(ctx context.Context, c *client, id string) error {
				_, err := c.workloads.Stop(ctx, connect.NewRequest(&v1.StopRequest{Id: id, TimeoutSeconds: timeout}))
				return err
			})
		},
	}
	cmd.Flags().Int32Var(&timeout, "timeout", 0, "seconds to wait after SIGTERM (default 10)")
	return cmd
}

func newStartCmd(api *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "start ID...",
		Short: "Run stopped or exited workloads again, with their spec, id and URL",
		Long: `Start runs a workload that was stopped, or that exited, again on its node,
with the spec it was spawned with. Its restart count starts again from 0.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachID(api, args, func(ctx context.Context, c *client, id string) error {
				_, err := c.workloads.Start(ctx, connect.NewRequest(&v1.StartRequest{Id: id}))
				return err
			})
		},
	}
}

func newRmCmd(api *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID...",
		Aliases: []string{"remove"},
		Short:   "Stop workloads if needed and delete every trace of them",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return eachID(api, args, func(ctx context.Context, c *client, id string) error {
				_, err := c.workloads.Remove(ctx, connect.NewRequest(&v1.RemoveRequest{Id: id}))
				return err
			})
		},
	}
}

// eachID runs fn for every id, printing each id that succeeded, and fails
// if any failed.
func eachID(api *apiFlags, ids []string, fn func(context.Context, *client, string) error) error {
	for _, id := range ids {
		if err := spec.ValidateID(id); err != nil {
			return err
		}
	}
	c, ctx, cancel, err := api.connect()
	if err != nil {
		return err
	}
	defer cancel()
	var failed []error
	for _, id := range ids {
		if err := fn(ctx, c, id); err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", id, explain(err)))
			continue
		}
		fmt.Println(id)
	}
	return errors.Join(failed...)
}

func newInfoCmd(api *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "info",
		Short: "Show the node's name, capacity and isolations",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return api.call(func(ctx context.Context, c *client) error {
				res, err := c.nodes.Info(ctx, connect.NewRequest(&v1.InfoRequest{}))
				if err != nil {
					return err
				}
				return printJSON(res.Msg)
			})
		},
	}
}

// workloadView is how the CLI prints a workload as JSON: the REST API's
// field names, with numbers as numbers (protojson would quote int64s and
// deliberately varies its spacing).
type workloadView struct {
	ID          string            `json:"id"`
	URL         string            `json:"url"`
	Node        string            `json:"node"`
	State       string            `json:"state"`
	Desired     string            `json:"desired"`
	Ready       bool              `json:"ready"`
	ExitCode    *int32            `json:"exit_code,omitempty"`
	Restart     string            `json:"restart,omitempty"`
	Restarts    int32             `json:"restarts"`
	Volumes     map[string]string `json:"volumes,omitempty"`
	Entrypoint  []string          `json:"entrypoint,omitempty"`
	Workdir     string            `json:"workdir,omitempty"`
	User        string            `json:"user,omitempty"`
	IP          string            `json:"ip,omitempty"`
	Pid         int32             `json:"pid,omitempty"`
	ImageRef    string            `json:"image_ref"`
	ImageDigest string            `json:"image_digest,omitempty"`
	Cores       float64           `json:"cores"`
	Memory      int64             `json:"memory"`
	Disk        int64             `json:"disk,omitempty"`
	Ports       map[string]int64  `json:"ports,omitempty"`
	Env         []string          `json:"env,omitempty"`
	Args        []string          `json:"args,omitempty"`
	Isolation   string            `json:"isolation"`
	Egress      []string          `json:"egress,omitempty"`
	Tty         bool              `json:"tty,omitempty"`
	// Secrets are names only: ENV_NAME to secret name.
	Secrets   map[string]string `json:"secrets,omitempty"`
	Security  spec.Security     `json:"security"`
	Error     string            `json:"error,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
}

func viewOf(w *v1.Workload) workloadView {
	s := w.GetSpec()
	v := workloadView{
		ID: w.Id, URL: w.Url, Node: w.Node, State: w.State, Desired: w.Desired, Ready: w.Ready, IP: w.Ip, Pid: w.Pid,
		ImageRef: s.GetImageRef(), ImageDigest: w.ImageDigest, Cores: s.GetCores(), Memory: s.GetMemory(), Disk: s.GetDisk(),
		Ports: s.GetPorts(), Env: s.GetEnv(), Args: s.GetArgs(), Isolation: s.GetIsolation(), Tty: s.GetTty(), Egress: s.GetEgress(),
		Security: spec.Security{Seccomp: s.GetSecurity().GetSeccomp(), UserNS: s.GetSecurity().GetUserns()}.OrDefaults(),
		Restart:  s.GetRestart(), Restarts: w.Restarts, Volumes: s.GetVolumes(), Entrypoint: s.GetEntrypoint(),
		Workdir: s.GetWorkdir(), User: s.GetUser(),
		Secrets: s.GetSecrets(), Error: w.Error, CreatedAt: w.GetCreatedAt().AsTime(),
	}
	if w.State == "exited" {
		code := w.ExitCode
		v.ExitCode = &code
	}
	return v
}
