package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"

	"github.com/hypercore-dev/hypercore/internal/proxy"
)

// key is one setting: its TOML key (which, upper case after HYPERCORE_,
// is also its environment variable), its flag and its Config field.
type key struct {
	name string
	// flag is the flag's name without "--"; "" for join, whose command-line
	// form is the arguments.
	flag string
	// inherited flags are the root command's (--data-dir, which the client
	// commands share); AddFlags leaves them out.
	inherited bool
	usage     string
	// field points at the setting in c: a *string, *bool, *int,
	// *time.Duration or *[]string, which says how its text is read.
	field func(c *Config) any
}

// keys lists every setting, in the order the docs give them. The flags'
// names, defaults (Default) and meanings are those 'hypercore cluster' has
// always had: scripts use them.
var keys = sync.OnceValue(func() []key {
	return []key{
		{name: "data_dir", flag: "data-dir", inherited: true, usage: "node state directory",
			field: func(c *Config) any { return &c.DataDir }},
		{name: "node_name", flag: "node-name", usage: "node name (default: the hostname)",
			field: func(c *Config) any { return &c.NodeName }},
		{name: "log_level", flag: "log-level", usage: "debug, info, warn or error",
			field: func(c *Config) any { return &c.LogLevel }},
		{name: "grpc_bind_addr", flag: "grpc-bind-addr", usage: "API address (gRPC, Connect and JSON on one port); TLS, and plain HTTP too only on loopback",
			field: func(c *Config) any { return &c.APIAddr }},

		{name: "api_tls_cert", flag: "api-tls-cert", usage: "TLS certificate (PEM) for the API instead of the node's certificate from the cluster CA",
			field: func(c *Config) any { return &c.APITLSCert }},
		{name: "api_tls_key", flag: "api-tls-key", usage: "TLS private key (PEM) for --api-tls-cert",
			field: func(c *Config) any { return &c.APITLSKey }},
		{name: "cluster_bind_addr", flag: "cluster-bind-addr", usage: "cluster address IP:PORT, TCP and UDP: gossip, node RPC (mutual TLS, joins) and raft all use this one port",
			field: func(c *Config) any { return &c.ClusterBindAddr }},
		{name: "cluster_advertise_addr", flag: "cluster-advertise-addr", usage: "IP other nodes reach this one at (default: the --cluster-bind-addr IP, or the first global address)",
			field: func(c *Config) any { return &c.ClusterAdvertiseAddr }},
		{name: "join", usage: "gossip addresses IP:PORT of cluster members to join (the arguments JOIN_ADDR...); none starts a new cluster",
			field: func(c *Config) any { return &c.Join }},
		{name: "join_token", flag: "join-token", usage: "token that admits this node to the cluster at JOIN_ADDR, from <data-dir>/join-token on the first node (or HYPERCORE_JOIN_TOKEN); needed on the first start only",
			field: func(c *Config) any { return &c.JoinToken }},
		{name: "server", flag: "server", usage: "keep the cluster state (a raft voter); give it to the first 1, 3 or 5 nodes. The first node always is one",
			field: func(c *Config) any { return &c.Server }},
		{name: "public", flag: "public", usage: "take workloads with raw TCP public ports (--public=false for a private node)",
			field: func(c *Config) any { return &c.Public }},
		{name: "placement", flag: "placement", usage: "how to pick among nodes that fit: binpack (fill nodes) or spread",
			field: func(c *Config) any { return &c.Placement }},
		{name: "failover_grace", flag: "failover-grace", usage: "how long a failed node keeps its workloads before they are placed elsewhere",
			field: func(c *Config) any { return &c.FailoverGrace }},
		{name: "port_range", flag: "port-range", usage: "public TCP ports this node may open, MIN-MAX (default: any)",
			field: func(c *Config) any { return &c.PortRange }},
		{name: "memory", flag: "memory", usage: "memory in MiB that workloads may reserve on this node; more than the host has overcommits (default: the host's total)",
			field: func(c *Config) any { return &c.MemoryMiB }},
		{name: "fast_failure", flag: "fast-failure", usage: "detect failed nodes in 2-3 s instead of about 4 s, with more gossip traffic",
			field: func(c *Config) any { return &c.FastFailure }},
		{name: "ephemeral", flag: "ephemeral", usage: "on SIGTERM stop and remove this node's workloads and leave the cluster, instead of keeping them for the next start (a batch job's node)",
			field: func(c *Config) any { return &c.Ephemeral }},

		{name: "cluster_base_url", flag: "cluster-base-url", usage: "base domain: workloads are served at <id>.<base>",
			field: func(c *Config) any { return &c.BaseDomain }},
		{name: "cluster_tls_cert", flag: "cluster-tls-cert", usage: "TLS certificate (PEM, e.g. a *.<base> wildcard) to serve HTTPS; reloaded when the file changes",
			field: func(c *Config) any { return &c.TLSCert }},
		{name: "cluster_tls_key", flag: "cluster-tls-key", usage: "TLS private key (PEM) for --cluster-tls-cert",
			field: func(c *Config) any { return &c.TLSKey }},
		{name: "http_addr", flag: "http-addr", usage: "proxy HTTP address",
			field: func(c *Config) any { return &c.HTTPAddr }},
		{name: "https_addr", flag: "https-addr", usage: "proxy HTTPS address, used with --cluster-tls-cert or --acme-email",
			field: func(c *Config) any { return &c.HTTPSAddr }},
		{name: "tcp_bind_addr", flag: "tcp-bind-addr", usage: "host address that raw TCP public ports (any port but 80/443, or tcp:N) listen on",
			field: func(c *Config) any { return &c.TCPBindAddr }},
		{name: "tcp_idle_timeout", flag: "tcp-idle-timeout", usage: "close a raw TCP connection after this long with no traffic either way",
			field: func(c *Config) any { return &c.TCPIdleTimeout }},
		{name: "tcp_max_conns", flag: "tcp-max-conns", usage: "most open connections per raw TCP public port; more are refused",
			field: func(c *Config) any { return &c.TCPMaxConns }},

		{name: "runtime", flag: "runtime", usage: "OCI runtime for containers: runc or crun",
			field: func(c *Config) any { return &c.Runtime }},
		{name: "cri_endpoint", flag: "cri-endpoint", usage: "run container workloads on this CRI endpoint (unix:///run/containerd/containerd.sock, or tcp://HOST:PORT with --cri-ca/--cri-cert/--cri-key) instead of --runtime; the endpoint pulls images and networks pods itself (docs/cri.md)",
			field: func(c *Config) any { return &c.CRIEndpoint }},
		{name: "cri_ca", flag: "cri-ca", usage: "PEM file of the CA that signed a tcp:// --cri-endpoint's certificate",
			field: func(c *Config) any { return &c.CRICA }},
		{name: "cri_cert", flag: "cri-cert", usage: "PEM client certificate the node shows a tcp:// --cri-endpoint",
			field: func(c *Config) any { return &c.CRICert }},
		{name: "cri_key", flag: "cri-key", usage: "PEM key of --cri-cert",
			field: func(c *Config) any { return &c.CRIKey }},
		{name: "subnet", flag: "subnet", usage: "workload network, which must overlap no address or route of the host; the bridge takes its first address (default: a free /16 of 10.0.0.0/8, picked at the first start and kept in <data-dir>/network/subnet)",
			field: func(c *Config) any { return &c.Subnet }},
		{name: "bridge", flag: "bridge", usage: "name of the node's bridge (default: hcb plus the node id, kept in <data-dir>/node-id)",
			field: func(c *Config) any { return &c.Bridge }},
		{name: "egress_allow", flag: "egress-allow", usage: "CIDR every workload may reach although the egress policy blocks it (link-local, private ranges, the host's networks, the cluster's nodes); repeatable or comma-separated",
			field: func(c *Config) any { return &c.EgressAllow }},
		{name: "image_gc_interval", flag: "image-gc-interval", usage: "delete images no workload on this node uses (in any state) this often, the first time a minute after start; 0 never ('hypercore image prune' still does)",
			field: func(c *Config) any { return &c.ImageGCInterval }},
		{name: "image_gc_grace", flag: "image-gc-grace", usage: "keep an image no workload uses this long after its last use, so a respawn finds it; layers no kept image uses go",
			field: func(c *Config) any { return &c.ImageGCGrace }},
		{name: "default_disk", flag: "default-disk", usage: "writable layer size in MiB of a workload whose spec gives no disk; writes past it fail with ENOSPC. 0 leaves such workloads unbounded",
			field: func(c *Config) any { return &c.DefaultDiskMiB }},
		{name: "max_image_size", flag: "max-image-size", usage: "most MiB one image may take unpacked; a pull of a bigger image (or a compression bomb) stops with an error",
			field: func(c *Config) any { return &c.MaxImageSizeMiB }},
		{name: "image_store_max", flag: "image-store-max", usage: "most MiB the image store may use on disk; a pull that would go past it fails ('hypercore image prune' makes room). 0 means no budget",
			field: func(c *Config) any { return &c.ImageStoreMaxMiB }},

		{name: "acme_email", flag: "acme-email", usage: "get certificates from an ACME CA with this account email (agrees to the CA's terms): per <id>.<base> on demand, or *.<base> with --acme-dns; stored in <data-dir>/acme",
			field: func(c *Config) any { return &c.ACMEEmail }},
		{name: "acme_ca", flag: "acme-ca", usage: "ACME directory URL",
			field: func(c *Config) any { return &c.ACMECA }},
		{name: "acme_ca_root", flag: "acme-ca-root", usage: "PEM file of roots to trust for the ACME CA's own HTTPS (a private CA)",
			field: func(c *Config) any { return &c.ACMECARoot }},
		{name: "acme_dns", flag: "acme-dns", usage: "DNS provider for one *.<base> wildcard through DNS-01; built in: " + strings.Join(proxy.DNSProviderNames(), ", "),
			field: func(c *Config) any { return &c.ACMEDNS }},
		{name: "acme_dns_config", flag: "acme-dns-config", usage: "DNS provider settings key=value,...; each may instead be in HYPERCORE_ACME_DNS_<KEY> (better for secrets)",
			field: func(c *Config) any { return &c.ACMEDNSConfig }},
		{name: "acme_dns_resolvers", flag: "acme-dns-resolvers", usage: "DNS servers host[:port],... used to find the zone of _acme-challenge.<base> (default: the system's)",
			field: func(c *Config) any { return &c.ACMEDNSResolvers }},
		{name: "acme_challenges", flag: "acme-challenges", usage: "challenge types for per-name certificates: tls-alpn-01 (on --https-addr) and/or http-01 (on --http-addr)",
			field: func(c *Config) any { return &c.ACMEChallenges }},
	}
})

// lookup returns the key called name, or nil.
func lookup(name string) *key {
	for _, k := range keys() {
		if k.name == name {
			return &k
		}
	}
	return nil
}

// ConfigFlag is the flag (and, as HYPERCORE_CONFIG, the variable) that
// names the TOML file. It is not a key: a file cannot name another.
const ConfigFlag = "config"

// AddFlags adds a flag for every setting to fs, with the defaults of
// Default, and --config. The root command's --data-dir is not added: the
// caller has it already. Load reads the flags back.
func AddFlags(fs *pflag.FlagSet) {
	def := Default()
	for _, k := range keys() {
		if k.flag == "" || k.inherited {
			continue
		}
		switch p := k.field(&def).(type) {
		case *string:
			fs.String(k.flag, *p, k.usage)
		case *bool:
			fs.Bool(k.flag, *p, k.usage)
		case *int:
			fs.Int(k.flag, *p, k.usage)
		case *time.Duration:
			fs.Duration(k.flag, *p, k.usage)
		case *[]string:
			fs.StringSlice(k.flag, *p, k.usage)
		default:
			panic(fmt.Sprintf("config: key %s: no flag for a %T", k.name, p))
		}
	}
	fs.String(ConfigFlag, "", "TOML file of settings (keys as in docs/config.md, e.g. join_token = \"...\"); flags and HYPERCORE_<KEY> variables win over it (or HYPERCORE_CONFIG)")
}

// set reads s, a value as a flag or a variable gives it, into the field p.
// The error says what form the value should take.
func set(p any, s string) error {
	switch p := p.(type) {
	case *string:
		*p = s
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q: want true or false", s)
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q: want a whole number", s)
		}
		*p = n
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q: want a duration such as 90s, 10m or 1h", s)
		}
		*p = d
	case *[]string:
		*p = nil
		for part := range strings.SplitSeq(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				*p = append(*p, part)
			}
		}
	default:
		return errors.New("no way to read this setting") // a key with a new field type
	}
	return nil
}
