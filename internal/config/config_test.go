package config

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/hypercore-dev/hypercore/internal/cluster/scheduler"
)

// env is a fake environment for Sources.Getenv.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// flags returns AddFlags' flags parsed from args, as cobra would give
// them, with --data-dir added as the root command does.
func flags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("cluster", pflag.ContinueOnError)
	fs.String("data-dir", defaultDataDir, "")
	AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return fs
}

// file writes a config file and returns its path.
func file(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cluster.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func load(t *testing.T, src Sources) *Config {
	t.Helper()
	if src.Getenv == nil {
		src.Getenv = env{}.get // never the test process's own environment
	}
	c, err := Load(src)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// loadErr returns Load's error, failing the test when there is none.
func loadErr(t *testing.T, src Sources) string {
	t.Helper()
	if src.Getenv == nil {
		src.Getenv = env{}.get
	}
	c, err := Load(src)
	if err == nil {
		t.Fatalf("Load succeeded (%+v), want an error", c)
	}
	return err.Error()
}

// The defaults are those the flags of 'hypercore cluster' had before this
// package, written out literally so a change to one shows here.
func TestDefaultsAreTheOldFlagDefaults(t *testing.T) {
	old := map[string]string{
		"data_dir":               "/var/lib/hypercore",
		"node_name":              "",
		"log_level":              "info",
		"grpc_bind_addr":         "127.0.0.1:8000",
		"api_tls_cert":           "",
		"api_tls_key":            "",
		"cluster_bind_addr":      "0.0.0.0:7946",
		"cluster_advertise_addr": "",
		"join":                   "",
		"join_token":             "",
		"server":                 "false",
		"public":                 "true",
		"placement":              "binpack",
		"failover_grace":         "1s",
		"port_range":             "",
		"fast_failure":           "false",
		"ephemeral":              "false",
		"cluster_base_url":       "localhost",
		"cluster_tls_cert":       "",
		"cluster_tls_key":        "",
		"http_addr":              ":80",
		"https_addr":             ":443",
		"tcp_bind_addr":          "0.0.0.0",
		"tcp_idle_timeout":       "10m0s",
		"tcp_max_conns":          "1024",
		"runtime":                "runc",
		"cri_endpoint":           "",
		"cri_ca":                 "",
		"cri_cert":               "",
		"cri_key":                "",
		// Picked per node, and kept, since nodes may share a host.
		"subnet":             "",
		"bridge":             "",
		"egress_allow":       "",
		"image_gc_interval":  "1h0m0s",
		"image_gc_grace":     "1h0m0s",
		"default_disk":       "10240",
		"max_image_size":     "10240",
		"image_store_max":    "0",
		"memory":             "0",
		"acme_email":         "",
		"acme_ca":            "https://acme-v02.api.letsencrypt.org/directory",
		"acme_ca_root":       "",
		"acme_dns":           "",
		"acme_dns_config":    "",
		"acme_dns_resolvers": "",
		"acme_challenges":    "tls-alpn-01,http-01",
	}
	def := Default()
	for _, k := range keys() {
		want, ok := old[k.name]
		if !ok {
			t.Errorf("key %s has no old default in this test", k.name)
			continue
		}
		delete(old, k.name)
		if got := format(k.field(&def)); got != want {
			t.Errorf("default of %s = %q, want %q", k.name, got, want)
		}
	}
	for name := range old {
		t.Errorf("old setting %s is not a key any more", name)
	}

	// The flags show the same defaults in --help.
	fs := flags(t)
	for _, k := range keys() {
		if k.flag == "" || k.inherited {
			continue
		}
		f := fs.Lookup(k.flag)
		if f == nil {
			t.Errorf("no flag --%s for key %s", k.flag, k.name)
			continue
		}
		want := format(k.field(&def))
		if _, list := k.field(&def).(*[]string); list {
			want = "[" + want + "]" // how pflag shows a repeatable flag's default
		}
		if f.DefValue != want {
			t.Errorf("--%s default %q, want %q", k.flag, f.DefValue, want)
		}
	}

	// Nothing given: the defaults, checked and parsed.
	c := load(t, Sources{Flags: fs})
	if c.Level.String() != "INFO" || c.SubnetPrefix.IsValid() ||
		c.Strategy != scheduler.BinPack || c.PortMin != 0 || c.PortMax != 0 || c.ACME != nil {
		t.Errorf("parsed defaults: level %v subnet %v strategy %v ports %d-%d acme %v", c.Level, c.SubnetPrefix, c.Strategy, c.PortMin, c.PortMax, c.ACME)
	}
	for _, k := range keys() {
		if got, want := format(k.field(c)), format(k.field(&def)); got != want {
			t.Errorf("loaded %s = %q, want the default %q", k.name, got, want)
		}
	}
}

// Every key: its flag beats its variable, which beats the file, which
// beats the default.
func TestPrecedence(t *testing.T) {
	// Three valid values for each key that differ from each other and
	// from the default: file, env, flag.
	values := map[string][3]string{
		"data_dir":               {"/srv/file", "/srv/env", "/srv/flag"},
		"node_name":              {"file", "env", "flag"},
		"log_level":              {"debug", "warn", "error"},
		"grpc_bind_addr":         {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"},
		"api_tls_cert":           {"/file.pem", "/env.pem", "/flag.pem"},
		"api_tls_key":            {"/file.key", "/env.key", "/flag.key"},
		"cluster_bind_addr":      {"10.0.0.1:1", "10.0.0.1:2", "10.0.0.1:3"},
		"cluster_advertise_addr": {"10.0.0.1", "10.0.0.2", "10.0.0.3"},
		"join":                   {"10.0.0.1:7946", "10.0.0.2:7946,10.0.0.3:7946", "10.0.0.4:7946"},
		"join_token":             {"file", "env", "flag"},
		"server":                 {"true", "false", "true"},
		"public":                 {"false", "true", "false"},
		"placement":              {"spread", "binpack", "spread"},
		"failover_grace":         {"10s", "20s", "30s"},
		"port_range":             {"1-10", "2-20", "3-30"},
		"fast_failure":           {"true", "false", "true"},
		"ephemeral":              {"true", "false", "true"},
		"cluster_base_url":       {"file.example", "env.example", "flag.example"},
		"cluster_tls_cert":       {"/file.pem", "/env.pem", "/flag.pem"},
		"cluster_tls_key":        {"/file.key", "/env.key", "/flag.key"},
		"http_addr":              {":81", ":82", ":83"},
		"https_addr":             {":441", ":442", ":444"},
		"tcp_bind_addr":          {"10.0.0.1", "10.0.0.2", "::"},
		"tcp_idle_timeout":       {"1m0s", "2m0s", "3m0s"},
		"tcp_max_conns":          {"1", "2", "3"},
		"runtime":                {"crun", "runsc", "/usr/bin/crun"},
		"cri_endpoint":           {"unix:///a.sock", "unix:///b.sock", "unix:///c.sock"},
		"cri_ca":                 {"/a/ca.pem", "/b/ca.pem", "/c/ca.pem"},
		"cri_cert":               {"/a/c.pem", "/b/c.pem", "/c/c.pem"},
		"cri_key":                {"/a/k.pem", "/b/k.pem", "/c/k.pem"},
		"subnet":                 {"10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"},
		"bridge":                 {"hf", "he", "hg"},
		"egress_allow":           {"10.0.0.0/8", "192.168.0.0/16,169.254.169.254/32", "172.16.0.0/12"},
		"image_gc_interval":      {"0s", "2h0m0s", "3h0m0s"},
		"image_gc_grace":         {"0s", "2m0s", "3m0s"},
		"default_disk":           {"0", "100", "200"},
		"max_image_size":         {"1", "2", "3"},
		"image_store_max":        {"0", "2000", "3000"},
		"memory":                 {"1000", "2000", "3000"},
		"acme_email":             {"f@example.com", "e@example.com", "g@example.com"},
		"acme_ca":                {"https://f.example/dir", "https://e.example/dir", "https://g.example/dir"},
		"acme_challenges":        {"http-01", "tls-alpn-01", "http-01,tls-alpn-01"},
	}
	// acme_ca_root names a file Validate reads; acme_dns and
	// acme_dns_config a provider, which acme_dns_resolvers needs: they
	// are tested in TestACME.
	skip := []string{"acme_ca_root", "acme_dns", "acme_dns_config", "acme_dns_resolvers"}
	for _, k := range keys() {
		if _, ok := values[k.name]; !ok && !slices.Contains(skip, k.name) {
			t.Errorf("key %s has no values in this test", k.name)
		}
	}

	var toml strings.Builder
	e := env{}
	var args, joinArgs []string
	for name, v := range values {
		toml.WriteString(name + " = \"" + v[0] + "\"\n")
		e[envName(name)] = " " + v[1] + "\n" // a variable's spaces do not count
		if k := lookup(name); k.flag != "" {
			args = append(args, "--"+k.flag+"="+v[2])
		} else {
			joinArgs = append(joinArgs, v[2])
		}
	}
	path := file(t, toml.String())
	check := func(t *testing.T, c *Config, layer int, from string) {
		t.Helper()
		for name, v := range values {
			if got := format(lookup(name).field(c)); got != v[layer] {
				t.Errorf("%s = %q, want %q from the %s", name, got, v[layer], from)
			}
		}
	}
	t.Run("file", func(t *testing.T) {
		check(t, load(t, Sources{Flags: flags(t, "--config", path)}), 0, "file")
	})
	t.Run("env beats file", func(t *testing.T) {
		check(t, load(t, Sources{Flags: flags(t, "--config", path), Getenv: e.get}), 1, "environment")
	})
	t.Run("HYPERCORE_CONFIG names the file", func(t *testing.T) {
		check(t, load(t, Sources{Getenv: env{"HYPERCORE_CONFIG": path}.get}), 0, "file")
	})
	t.Run("flag beats env", func(t *testing.T) {
		c := load(t, Sources{Flags: flags(t, append(args, "--config", path)...), Args: joinArgs, Getenv: e.get})
		check(t, c, 2, "flags")
		if c.origin["subnet"] != "--subnet" {
			t.Errorf("origin of subnet %q, want --subnet", c.origin["subnet"])
		}
	})
	t.Run("parsed", func(t *testing.T) {
		c := load(t, Sources{Flags: flags(t, "--config", path)})
		if c.PortMin != 1 || c.PortMax != 10 || c.Strategy != scheduler.Spread || c.Level.String() != "DEBUG" ||
			c.SubnetPrefix != netip.MustParsePrefix("10.1.0.0/16") || c.ACME == nil || c.ACME.Email != "f@example.com" {
			t.Errorf("parsed from the file: ports %d-%d strategy %v level %v subnet %v acme %+v", c.PortMin, c.PortMax, c.Strategy, c.Level, c.SubnetPrefix, c.ACME)
		}
	})
}

// A flag given as on the command line beats a variable even when the
// flag's value is the default: what was typed is what counts.
func TestFlagAtItsDefaultStillWins(t *testing.T) {
	c := load(t, Sources{Flags: flags(t, "--public=true", "--http-addr", ":80"), Getenv: env{"HYPERCORE_PUBLIC": "false", "HYPERCORE_HTTP_ADDR": ":8080"}.get})
	if !c.Public || c.HTTPAddr != ":80" {
		t.Errorf("public %v http %q: the flags should win", c.Public, c.HTTPAddr)
	}
	// And an empty variable is no setting: the file's value stays.
	c = load(t, Sources{Flags: flags(t, "--config", file(t, `join_token = "from-file"`)), Getenv: env{"HYPERCORE_JOIN_TOKEN": ""}.get})
	if c.JoinToken != "from-file" {
		t.Errorf("join token %q, want the file's", c.JoinToken)
	}
}

func TestFileValueTypes(t *testing.T) {
	c := load(t, Sources{Flags: flags(t, "--config", file(t, `
server = true
public = "false"
tcp_max_conns = 7
tcp_idle_timeout = "90s"
join = ["10.0.0.1:7946", "10.0.0.2:7946"]
`))})
	if !c.Server || c.Public || c.TCPMaxConns != 7 || c.TCPIdleTimeout != 90*time.Second ||
		!reflect.DeepEqual(c.Join, []string{"10.0.0.1:7946", "10.0.0.2:7946"}) {
		t.Errorf("from the file: %+v", c)
	}

	for _, tc := range []struct{ text, want string }{
		{`tcp_idle_timeout = 600`, `tcp_idle_timeout: want a duration as a string such as "90s"`},
		{`server = 1`, `server: want true or false`},
		{`public = "maybe"`, `public: "maybe": want true or false`},
		{`tcp_max_conns = 1.5`, `tcp_max_conns: want a whole number`},
		{`join = [1, 2]`, `join: want an array of strings`},
		{`subnet = ["10.0.0.0/8"]`, `subnet: want a string`},
		{`subnet = "10.0.0.0/8`, `line 1 column`},
	} {
		path := file(t, tc.text)
		got := loadErr(t, Sources{Flags: flags(t, "--config", path)})
		if !strings.Contains(got, tc.want) || !strings.Contains(got, path) {
			t.Errorf("%s: error %q, want it to name %s and say %q", tc.text, got, path, tc.want)
		}
	}
}

func TestUnknownKeys(t *testing.T) {
	path := file(t, "server = true\ntcp_idle = \"1m\"\n\n[acme]\nemail = \"a@b.c\"\n")
	got := loadErr(t, Sources{Flags: flags(t, "--config", path)})
	for _, want := range []string{path, `unknown key "tcp_idle" on line 2`, `unknown key "acme"`, "docs/config.md"} {
		if !strings.Contains(got, want) {
			t.Errorf("error %q does not say %q", got, want)
		}
	}

	got = loadErr(t, Sources{Getenv: env{"HYPERCORE_CONFIG": file(t, `join-token = "x"`)}.get})
	if !strings.Contains(got, `unknown key "join-token"`) || !strings.Contains(got, "did you mean join_token?") {
		t.Errorf("error %q, want a hint at join_token", got)
	}

	missing := filepath.Join(t.TempDir(), "none.toml")
	if got := loadErr(t, Sources{Flags: flags(t, "--config", missing)}); !strings.Contains(got, "--config") || !strings.Contains(got, missing) {
		t.Errorf("missing file: %q", got)
	}
	if got := loadErr(t, Sources{Getenv: env{"HYPERCORE_PUBLIC": "nope"}.get}); !strings.Contains(got, `HYPERCORE_PUBLIC="nope": want true or false`) {
		t.Errorf("bad variable: %q", got)
	}
	if got := loadErr(t, Sources{Getenv: env{"HYPERCORE_FAILOVER_GRACE": "5"}.get}); !strings.Contains(got, "HYPERCORE_FAILOVER_GRACE=\"5\": want a duration") {
		t.Errorf("bad variable: %q", got)
	}
}

// Each check of Validate, reached through each source: the error names the
// setting as it was given and says what to do.
func TestValidationErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags []string
		env   env
		file  string
		want  []string
	}{
		{name: "data dir", file: `data_dir = ""`, want: []string{": data_dir is empty", "/var/lib/hypercore"}},
		{name: "log level", flags: []string{"--log-level", "loud"}, want: []string{`--log-level "loud": use debug, info, warn or error`}},
		{name: "api addr", env: env{"HYPERCORE_GRPC_BIND_ADDR": "8000"}, want: []string{`HYPERCORE_GRPC_BIND_ADDR "8000": want HOST:PORT`}},
		{name: "http port", flags: []string{"--http-addr", ":http2"}, want: []string{`--http-addr ":http2": the port must be a number`}},
		{name: "https addr", file: `https_addr = "443"`, want: []string{`: https_addr "443": want HOST:PORT such as :443`}},
		{name: "cluster bind", flags: []string{"--cluster-bind-addr", "10.0.0.1"}, want: []string{`--cluster-bind-addr "10.0.0.1": want IP:PORT`}},
		{name: "cluster bind port", flags: []string{"--cluster-bind-addr", "10.0.0.1:65536"}, want: []string{"port must be 1-65535"}},
		{name: "advertise", env: env{"HYPERCORE_CLUSTER_ADVERTISE_ADDR": "node1.example"}, want: []string{`HYPERCORE_CLUSTER_ADVERTISE_ADDR "node1.example": want an IP address`}},
		{name: "placement", flags: []string{"--placement", "random"}, want: []string{`--placement "random": use binpack or spread`}},
		{name: "failover grace", flags: []string{"--failover-grace", "-1s"}, want: []string{"--failover-grace -1s is negative"}},
		{name: "port range order", flags: []string{"--port-range", "9000-8000"}, want: []string{`--port-range "9000-8000": want MIN-MAX`}},
		{name: "port range zero", env: env{"HYPERCORE_PORT_RANGE": "0-100"}, want: []string{`HYPERCORE_PORT_RANGE "0-100": want MIN-MAX`}},
		{name: "port range form", file: `port_range = "8000"`, want: []string{`port_range "8000": want MIN-MAX`}},
		{name: "port range size", flags: []string{"--port-range", "1-70000"}, want: []string{`"1-70000": want MIN-MAX`}},
		{name: "tls cert alone", flags: []string{"--cluster-tls-cert", "c.pem"}, want: []string{"--cluster-tls-cert is given without --cluster-tls-key: pass both"}},
		{name: "tls key alone", env: env{"HYPERCORE_CLUSTER_TLS_KEY": "k.pem"}, want: []string{"HYPERCORE_CLUSTER_TLS_KEY is given without --cluster-tls-cert"}},
		{name: "tcp bind", flags: []string{"--tcp-bind-addr", "0.0.0.0:0"}, want: []string{`--tcp-bind-addr "0.0.0.0:0": want an IP address`}},
		{name: "tcp idle", flags: []string{"--tcp-idle-timeout", "-1m"}, want: []string{"--tcp-idle-timeout -1m0s is negative"}},
		{name: "memory", flags: []string{"--memory", "-1"}, want: []string{"--memory -1 MiB is negative"}},
		{name: "tcp max conns", flags: []string{"--tcp-max-conns", "-1"}, want: []string{"--tcp-max-conns -1 is negative"}},
		{name: "subnet", flags: []string{"--subnet", "10.77.0.0/33"}, want: []string{`--subnet "10.77.0.0/33": want an IP prefix`}},
		{name: "image gc", flags: []string{"--image-gc-interval", "-1h"}, want: []string{"--image-gc-interval -1h0m0s is negative", "0 to turn the image GC off"}},
		{name: "several at once", flags: []string{"--subnet", "x", "--placement", "y"}, want: []string{"--subnet", "--placement"}},

		{name: "acme dns without email", flags: []string{"--acme-dns", "rfc2136"}, want: []string{"--acme-dns needs --acme-email"}},
		{name: "acme ca without email", env: env{"HYPERCORE_ACME_CA": "https://ca.example/dir"}, want: []string{"HYPERCORE_ACME_CA needs --acme-email"}},
		{name: "acme resolvers without email", flags: []string{"--acme-dns-resolvers", "1.1.1.1"}, want: []string{"--acme-dns-resolvers needs --acme-email"}},
		{name: "acme root without email", flags: []string{"--acme-ca-root", "/x.pem"}, want: []string{"--acme-ca-root needs --acme-email"}},
		{name: "acme config without email", flags: []string{"--acme-dns-config", "a=b"}, want: []string{"--acme-dns-config needs --acme-email"}},
		{name: "acme email", flags: []string{"--acme-email", "ops", "--cluster-base-url", "a.example"}, want: []string{`--acme-email "ops": want an email address`}},
		{name: "acme localhost", flags: []string{"--acme-email", "ops@example.com"}, want: []string{"--acme-email needs --cluster-base-url set to a domain"}},
		{name: "acme empty ca", file: "acme_email = \"ops@example.com\"\ncluster_base_url = \"a.example\"\nacme_ca = \"\"", want: []string{": acme_ca is empty; leave it out for Let's Encrypt"}},
		{name: "acme ca root", flags: []string{"--acme-email", "ops@example.com", "--cluster-base-url", "a.example", "--acme-ca-root", "/nonexistent/root.pem"}, want: []string{"--acme-ca-root: read ACME CA root"}},
		{name: "acme challenge", flags: []string{"--acme-email", "ops@example.com", "--cluster-base-url", "a.example", "--acme-challenges", "dns-01"}, want: []string{`--acme-challenges "dns-01": unknown challenge "dns-01"`}},
		{name: "acme no challenge", file: "acme_email = \"ops@example.com\"\ncluster_base_url = \"a.example\"\nacme_challenges = \",\"", want: []string{"acme_challenges names no challenge"}},
		{name: "acme dns config without dns", flags: []string{"--acme-email", "ops@example.com", "--cluster-base-url", "a.example", "--acme-dns-config", "server=ns1"}, want: []string{"--acme-dns-config is a DNS-01 setting", "need --acme-dns PROVIDER, built in: rfc2136"}},
		{name: "acme resolvers without dns", flags: []string{"--acme-email", "ops@example.com", "--cluster-base-url", "a.example", "--acme-dns-resolvers", "1.1.1.1"}, want: []string{"--acme-dns-resolvers is a DNS-01 setting", "need --acme-dns PROVIDER"}},
		{name: "acme unknown provider", flags: []string{"--acme-email", "ops@example.com", "--cluster-base-url", "a.example", "--acme-dns", "route99"}, want: []string{`--acme-dns: unknown DNS provider "route99"`}},
		{name: "acme provider settings", flags: []string{"--acme-email", "ops@example.com", "--cluster-base-url", "a.example", "--acme-dns", "rfc2136"}, want: []string{"--acme-dns: DNS provider rfc2136 needs settings", "HYPERCORE_ACME_DNS_KEY"}},
		{name: "acme dns config form", flags: []string{"--acme-email", "ops@example.com", "--cluster-base-url", "a.example", "--acme-dns", "rfc2136", "--acme-dns-config", "server"}, want: []string{"--acme-dns-config: \"server\" is not key=value"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.flags
			path := ""
			if tc.file != "" {
				path = file(t, tc.file)
				args = append(slices.Clone(args), "--config", path)
			}
			e := tc.env
			if e == nil {
				e = env{}
			}
			got := loadErr(t, Sources{Flags: flags(t, args...), Getenv: e.get})
			if path != "" && !strings.Contains(got, path+": ") {
				t.Errorf("error %q does not name the file %s", got, path)
			}
			for _, want := range tc.want {
				if !strings.Contains(got, want) {
					t.Errorf("error %q does not say %q", got, want)
				}
			}
		})
	}
}

func TestACME(t *testing.T) {
	const secret = "c2VjcmV0" // base64
	c := load(t, Sources{
		Flags: flags(t, "--data-dir", "/srv/hc", "--acme-email", "ops@example.com", "--cluster-base-url", "a.example",
			"--acme-dns", "rfc2136", "--acme-dns-config", "server=ns1.example,key_name=flag-key", "--acme-dns-resolvers", "10.0.0.53, [fd00::53]:5353"),
		Getenv: env{"HYPERCORE_ACME_DNS_KEY": secret, "HYPERCORE_ACME_DNS_KEY_NAME": "env-key"}.get,
	})
	a := c.ACME
	if a == nil || a.Email != "ops@example.com" || a.StorageDir != "/srv/hc/acme" || a.BaseDomain != "a.example" ||
		a.CA != "https://acme-v02.api.letsencrypt.org/directory" || a.HTTPAddr != ":80" || a.HTTPSAddr != ":443" {
		t.Fatalf("ACME setup %+v", a)
	}
	if a.DNSProvider == nil || !slices.Equal(a.DNSResolvers, []string{"10.0.0.53:53", "[fd00::53]:5353"}) {
		t.Errorf("DNS-01: provider %v resolvers %q", a.DNSProvider, a.DNSResolvers)
	}
	// The provider got the secret from the environment and the key name
	// from the flag, which wins over the environment.
	if got := reflect.ValueOf(a.DNSProvider).Elem(); got.FieldByName("Key").String() != secret || got.FieldByName("KeyName").String() != "flag-key" {
		t.Errorf("provider settings %+v", a.DNSProvider)
	}

	c = load(t, Sources{Flags: flags(t, "--acme-email", "ops@example.com", "--cluster-base-url", "a.example", "--acme-challenges", "http-01")})
	if a := c.ACME; a == nil || a.DNSProvider != nil || a.DisableHTTP01 || !a.DisableTLSALPN01 {
		t.Errorf("per-name ACME with http-01 only: %+v", a)
	}
}

// docs/config.md has a row for every key with its flag, variable and
// default, so the docs cannot fall behind the code.
func TestDocsListEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	docs := string(b)
	def := Default()
	for _, k := range keys() {
		flag := "`--" + k.flag + "`"
		if k.flag == "" {
			flag = "the arguments `JOIN_ADDR...`"
		}
		d := format(k.field(&def))
		if d != "" {
			d = "`" + d + "`"
		}
		row := "| `" + k.name + "` | " + flag + " | `" + envName(k.name) + "`"
		if k.name == "join" {
			row += " (comma-separated)"
		}
		row += " | " + d + " | "
		row = strings.Replace(row, "|  |", "| |", 1) // an empty default
		if !strings.Contains(docs, row) {
			t.Errorf("docs/config.md lacks the row %q", row)
		}
	}
	if n := strings.Count(docs, "\n| `"); n != len(keys()) {
		t.Errorf("docs/config.md has %d key rows, the code %d keys", n, len(keys()))
	}
}

// format is the text of a field as set reads it back, and as the docs
// and --help show defaults.
func format(p any) string {
	switch p := p.(type) {
	case *string:
		return *p
	case *bool:
		return strconv.FormatBool(*p)
	case *int:
		return strconv.Itoa(*p)
	case *time.Duration:
		return p.String()
	case *[]string:
		return strings.Join(*p, ",")
	}
	return fmt.Sprint(p)
}
