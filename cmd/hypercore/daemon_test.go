package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/hypercore-dev/hypercore/internal/cluster"
	"github.com/hypercore-dev/hypercore/internal/config"
	"github.com/hypercore-dev/hypercore/internal/node"
	"github.com/hypercore-dev/hypercore/internal/proxy"
)

func clusterCmd(t *testing.T) (*cobra.Command, *cobra.Command) {
	t.Helper()
	root := newRoot()
	cmd, _, err := root.Find([]string{"cluster"})
	if err != nil {
		t.Fatal(err)
	}
	return root, cmd
}

// Outside scripts run 'hypercore cluster' with these flags: each keeps its
// name and default, and the defaults agree with the packages that use them.
func TestClusterFlagsKeepNamesAndDefaults(t *testing.T) {
	old := map[string]string{
		"cluster-bind-addr":      "0.0.0.0:7946",
		"join-token":             "",
		"server":                 "false",
		"public":                 "true",
		"cluster-advertise-addr": "",
		"placement":              "binpack",
		"failover-grace":         cluster.DefaultFailoverGrace.String(),
		"port-range":             "",
		"fast-failure":           "false",
		"cluster-base-url":       "localhost",
		"cluster-tls-cert":       "",
		"cluster-tls-key":        "",
		"grpc-bind-addr":         defaultAPIAddr,
		"node-name":              "",
		"http-addr":              ":80",
		"https-addr":             ":443",
		"tcp-bind-addr":          "0.0.0.0",
		"tcp-idle-timeout":       "10m0s",
		"tcp-max-conns":          "1024",
		"runtime":                "runc",
		// Per node now: picked at the first start and kept.
		"subnet":             "",
		"bridge":             "",
		"egress-allow":       "[]",
		"log-level":          "info",
		"image-gc-interval":  node.DefaultImageGCInterval.String(),
		"acme-email":         "",
		"acme-ca":            proxy.LetsEncrypt,
		"acme-ca-root":       "",
		"acme-dns":           "",
		"acme-dns-config":    "",
		"acme-dns-resolvers": "",
		"acme-challenges":    "tls-alpn-01,http-01",
	}
	_, cmd := clusterCmd(t)
	for name, def := range old {
		f := cmd.Flags().Lookup(name)
		if f == nil {
			t.Errorf("hypercore cluster lost --%s", name)
			continue
		}
		if f.DefValue != def {
			t.Errorf("--%s default %q, want %q", name, f.DefValue, def)
		}
	}
	if f := cmd.Flags().Lookup(config.ConfigFlag); f == nil {
		t.Error("hypercore cluster has no --config")
	}
	if f := cmd.InheritedFlags().Lookup("data-dir"); f == nil || config.Default().DataDir != defaultDataDir {
		t.Errorf("--data-dir %v; config's default %q, the client's %q", f, config.Default().DataDir, defaultDataDir)
	}
	if d := config.Default(); d.FailoverGrace != cluster.DefaultFailoverGrace || d.ImageGCInterval != node.DefaultImageGCInterval || d.APIAddr != defaultAPIAddr {
		t.Errorf("config defaults %v %v %q disagree with the cluster's, the node's and the client's", d.FailoverGrace, d.ImageGCInterval, d.APIAddr)
	}
}

// noDaemon replaces the daemon for the test and returns the settings it
// would have run with, for each run.
func noDaemon(t *testing.T) *[]*config.Config {
	t.Helper()
	var got []*config.Config
	saved := daemon
	daemon = func(_ context.Context, cfg *config.Config) error {
		got = append(got, cfg)
		return nil
	}
	t.Cleanup(func() { daemon = saved })
	return &got
}

// The command hands its flags, the root's --data-dir among them, and its
// arguments to config.Load, whose errors stop it before anything starts.
func TestClusterChecksSettingsFirst(t *testing.T) {
	ran := noDaemon(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cluster", "--log-level", "loud"}, `--log-level "loud": use debug`},
		{[]string{"--data-dir", "", "cluster"}, "--data-dir is empty"},
		{[]string{"cluster", "--subnet", "x", "10.0.0.1:7946"}, `--subnet "x"`},
	} {
		root, _ := clusterCmd(t)
		root.SetArgs(tc.args)
		root.SetOut(new(bytes.Buffer))
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("hypercore %q: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
	if len(*ran) != 0 {
		t.Errorf("the daemon ran %d times on bad settings", len(*ran))
	}

	dir := t.TempDir()
	t.Setenv("HYPERCORE_PLACEMENT", "spread")
	t.Setenv("HYPERCORE_SUBNET", "10.5.0.0/16")
	root, _ := clusterCmd(t)
	root.SetArgs([]string{"--data-dir", dir, "cluster", "--subnet", "10.6.0.0/16", "--public=false", "10.0.0.1:7946", "10.0.0.2:7946"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if len(*ran) != 1 {
		t.Fatalf("the daemon ran %d times, want once", len(*ran))
	}
	cfg := (*ran)[0]
	if cfg.DataDir != dir || cfg.Subnet != "10.6.0.0/16" || cfg.Public || cfg.Placement != "spread" ||
		!slices.Equal(cfg.Join, []string{"10.0.0.1:7946", "10.0.0.2:7946"}) {
		t.Errorf("the daemon got %+v", cfg)
	}
}

func TestClusterHelpTellsOfConfigAndEnv(t *testing.T) {
	root, _ := clusterCmd(t)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs([]string{"cluster", "--help"})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--config", "HYPERCORE_JOIN_TOKEN", "HYPERCORE_CONFIG", "docs/config.md", "--join-token", "--acme-challenges"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("hypercore cluster --help does not mention %s", want)
		}
	}
}
