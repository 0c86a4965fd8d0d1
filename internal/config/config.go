// Package config is the node daemon's configuration ('hypercore cluster'):
// one Config, read from flags, the environment and an optional TOML file,
// and checked in one place (Validate) before the daemon makes anything.
//
// Every setting has one name in three forms: the TOML key (join_token), the
// flag (--join-token) and the environment variable (HYPERCORE_JOIN_TOKEN).
// A flag beats the environment, which beats the file, which beats the
// default. docs/config.md lists every key; keys() in keys.go is the list
// the code uses.
package config

import (
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/scheduler"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/rootless"
)

// Config is the daemon's settings. The fields up to Level are what the
// user gave (or the default), in the form the flags take them; Load fills
// them by precedence and Validate checks them. Validate also fills the
// fields from Level on, the parsed forms the daemon uses, so that nothing
// past Validate parses a setting again.
type Config struct {
	// DataDir holds the node's state: workloads, images, the cluster's
	// state and certificates, the API token.
	DataDir string
	// NodeName is the node's name in the cluster; empty means the name in
	// its certificate, else the hostname (see cluster.Identify).
	NodeName string
	// LogLevel is debug, info, warn or error (slog's level names).
	LogLevel string
	// APIAddr is where the API (gRPC, Connect and JSON) listens.
	APIAddr string

	// ClusterBindAddr is the cluster address IP:PORT: gossip, node RPC
	// and raft all use this one port.
	ClusterBindAddr string
	// ClusterAdvertiseAddr is the IP other nodes reach this one at; empty
	// picks one (see cluster.Config.AdvertiseIP).
	ClusterAdvertiseAddr string
	// Join are gossip addresses of members of the cluster to join; none
	// starts a new cluster. On the command line they are the arguments.
	Join []string
	// JoinToken admits this node on its first start.
	JoinToken string
	// Server makes the node a raft voter.
	Server bool
	// Public nodes take workloads with raw TCP public ports.
	Public bool
	// Placement is binpack or spread.
	Placement string
	// FailoverGrace is how long a failed node keeps its workloads before
	// they are placed elsewhere.
	FailoverGrace time.Duration
	// PortRange is MIN-MAX, the public TCP ports this node may open;
	// empty means any.
	PortRange string
	// MemoryMiB is the memory workloads may reserve on this node, in MiB;
	// 0 means the host's total.
	MemoryMiB int
	// FastFailure detects failed nodes sooner, with more gossip traffic.
	FastFailure bool
	// Ephemeral nodes stop and remove their workloads and leave the
	// cluster on SIGTERM, as a batch job's nodes must.
	Ephemeral bool

	// BaseDomain: workloads are served at <id>.<BaseDomain>.
	BaseDomain string
	// APITLSCert and APITLSKey are a PEM certificate and key the API
	// serves TLS with instead of the node's certificate; both or neither.
	APITLSCert, APITLSKey string
	// TLSCert and TLSKey are a PEM certificate and key to serve HTTPS
	// with; both or neither.
	TLSCert, TLSKey string
	// HTTPAddr and HTTPSAddr are the proxy's addresses.
	HTTPAddr, HTTPSAddr string
	// TCPBindAddr is the host IP raw TCP public ports listen on.
	TCPBindAddr string
	// TCPIdleTimeout closes a raw TCP connection idle this long.
	TCPIdleTimeout time.Duration
	// TCPMaxConns bounds open connections per raw TCP public port.
	TCPMaxConns int

	// Runtime is the OCI runtime for containers (runc or crun).
	Runtime string
	// CRIEndpoint, when set (unix:///path), runs container workloads on
	// that CRI endpoint instead of the OCI runtime.
	CRIEndpoint string
	// CRICA, CRICert and CRIKey are PEM files for a tcp:// CRIEndpoint:
	// the CA of the endpoint's certificate, the node's client certificate
	// and its key.
	CRICA, CRICert, CRIKey string
	// Subnet is the workload network; the bridge takes its first address.
	// Empty picks a free one at the first start and keeps it.
	Subnet string
	// Bridge is the name of the node's bridge; empty derives it from the
	// node id.
	Bridge string
	// EgressAllow are CIDRs every workload may reach despite the egress
	// policy.
	EgressAllow []string
	// ImageGCInterval is how often unused images are deleted; 0 never.
	ImageGCInterval time.Duration
	// ImageGCGrace is how long an image no workload uses is kept.
	ImageGCGrace time.Duration
	// DefaultDiskMiB is the writable layer size, in MiB, of a workload
	// whose spec gives no disk; 0 leaves such workloads unbounded.
	DefaultDiskMiB int
	// MaxImageSizeMiB bounds one image's unpacked size, in MiB.
	MaxImageSizeMiB int
	// ImageStoreMaxMiB bounds the image store's disk use, in MiB; 0 means
	// no budget.
	ImageStoreMaxMiB int

	// ACMEEmail turns ACME on: certificates from a CA such as Let's
	// Encrypt, with this account email. The other ACME settings need it.
	ACMEEmail string
	// ACMECA is the ACME directory URL.
	ACMECA string
	// ACMECARoot is a PEM file of roots for the CA's own HTTPS.
	ACMECARoot string
	// ACMEDNS is the DNS provider for one wildcard through DNS-01.
	ACMEDNS string
	// ACMEDNSConfig is the provider's settings, key=value,...; each may
	// instead be in HYPERCORE_ACME_DNS_<KEY>.
	ACMEDNSConfig string
	// ACMEDNSResolvers are DNS servers host[:port],... used to find the
	// zone of _acme-challenge.<base>.
	ACMEDNSResolvers string
	// ACMEChallenges are the per-name challenge types, comma-separated:
	// tls-alpn-01 and/or http-01.
	ACMEChallenges string

	// Level is LogLevel, parsed. Set by Validate.
	Level slog.Level
	// SubnetPrefix is Subnet, parsed; zero when Subnet is empty. Set by
	// Validate.
	SubnetPrefix netip.Prefix
	// EgressAllowPrefixes is EgressAllow, parsed. Set by Validate.
	EgressAllowPrefixes []netip.Prefix
	// PortMin and PortMax are PortRange, parsed; both 0 when it is empty.
	// Set by Validate.
	PortMin, PortMax uint16
	// Strategy is Placement, parsed. Set by Validate.
	Strategy scheduler.Strategy
	// ACME is the ACME setup, nil when ACMEEmail is empty. Set by
	// Validate, which has read the CA root file and built the DNS
	// provider; the caller fills in Table and Log.
	ACME *proxy.ACMEConfig

	// dnsEnv are the DNS provider's settings found in the environment
	// (HYPERCORE_ACME_DNS_<KEY>); ACMEDNSConfig wins over them.
	dnsEnv map[string]string
	// origin says where each key's value came from, by key, so that an
	// error names what the user wrote: "--subnet", "HYPERCORE_SUBNET" or
	// "config file FILE: subnet". A key not in it has its default, and
	// errors name it by its flag.
	origin map[string]string
}

// The defaults that other packages also know: tests in cmd/hypercore check
// that they agree (this package does not import node or cluster, so that
// they may one day import it).
const (
	defaultDataDir         = "/var/lib/hypercore"
	defaultAPIAddr         = "127.0.0.1:8000"
	defaultFailoverGrace   = time.Second // cluster.DefaultFailoverGrace
	defaultImageGCInterval = time.Hour   // node.DefaultImageGCInterval
	defaultDiskMiB         = 10 << 10    // 10 GiB
	defaultMaxImageSizeMiB = 10 << 10    // 10 GiB, image.DefaultMaxImageSize
)

// Default returns the settings of a daemon given no flag, variable or
// file: the defaults the flags of 'hypercore cluster' have always had.
func Default() Config {
	return Config{
		DataDir:         rootless.DataDir(defaultDataDir, rootless.Detect(), os.Getenv),
		LogLevel:        "info",
		APIAddr:         defaultAPIAddr,
		ClusterBindAddr: "0.0.0.0:7946",
		Public:          true,
		Placement:       "binpack",
		FailoverGrace:   defaultFailoverGrace,
		BaseDomain:      "localhost",
		HTTPAddr:        ":80",
		HTTPSAddr:       ":443",
		TCPBindAddr:     "0.0.0.0",
		TCPIdleTimeout:  10 * time.Minute,
		TCPMaxConns:     1024,
		Runtime:         "runc",
		ImageGCInterval: defaultImageGCInterval,
		ImageGCGrace:    time.Hour,
		DefaultDiskMiB:  defaultDiskMiB,
		MaxImageSizeMiB: defaultMaxImageSizeMiB,
		ACMECA:          proxy.LetsEncrypt,
		ACMEChallenges:  "tls-alpn-01,http-01",
	}
}

// name is how errors name key: where its value came from, else its flag.
func (c *Config) name(key string) string {
	if o, ok := c.origin[key]; ok {
		return o
	}
	if k := lookup(key); k != nil && k.flag != "" {
		return "--" + k.flag
	}
	return key
}

// flagName is how a message names a key the user should set: by its flag,
// the form the help shows (docs/config.md gives the others).
func flagName(key string) string {
	if k := lookup(key); k != nil && k.flag != "" {
		return "--" + k.flag
	}
	return key
}

// envName is the environment variable of a key: HYPERCORE_ and the key in
// upper case.
func envName(key string) string {
	return "HYPERCORE_" + strings.ToUpper(key)
}
