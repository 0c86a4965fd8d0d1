package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/cluster/scheduler"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Validate checks every setting and fills the parsed fields (Level,
// SubnetPrefix, PortMin/PortMax, Strategy, ACME). It reports every
// problem at once, each naming the setting as the user gave it (flag,
// variable or file key) and saying what to write instead. It reads the
// ACME CA root file, if one is given, and nothing else: the daemon calls
// it before it makes anything.
func (c *Config) Validate() error {
	p := &problems{c: c}
	bad := p.add

	if c.DataDir == "" {
		bad("data_dir", "is empty: give the directory for the node's state, such as %s", defaultDataDir)
	}
	if err := c.Level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		bad("log_level", "%q: use debug, info, warn or error", c.LogLevel)
	}
	checkHostPort := func(key, val, example string) {
		if _, port, err := net.SplitHostPort(val); err != nil {
			bad(key, "%q: want HOST:PORT such as %s (HOST may be empty for every address)", val, example)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			bad(key, "%q: the port must be a number 0-65535", val)
		}
	}
	checkHostPort("grpc_bind_addr", c.APIAddr, defaultAPIAddr)
	checkHostPort("http_addr", c.HTTPAddr, ":80")
	checkHostPort("https_addr", c.HTTPSAddr, ":443")

	// The cluster.
	if _, portText, err := net.SplitHostPort(c.ClusterBindAddr); err != nil {
		bad("cluster_bind_addr", "%q: want IP:PORT such as 0.0.0.0:7946", c.ClusterBindAddr)
	} else if port, err := strconv.Atoi(portText); err != nil || port < 1 || port > 65535 {
		bad("cluster_bind_addr", "%q: the port must be 1-65535", c.ClusterBindAddr)
	}
	if c.ClusterAdvertiseAddr != "" && net.ParseIP(c.ClusterAdvertiseAddr) == nil {
		bad("cluster_advertise_addr", "%q: want an IP address (or leave it out to pick one)", c.ClusterAdvertiseAddr)
	}
	var err error
	if c.Strategy, err = scheduler.ParseStrategy(c.Placement); err != nil {
		bad("placement", "%q: use binpack or spread", c.Placement)
	}
	if c.FailoverGrace < 0 {
		bad("failover_grace", "%s is negative; give how long a failed node keeps its workloads, such as 30s", c.FailoverGrace)
	}
	c.PortMin, c.PortMax = 0, 0
	if c.PortRange != "" {
		lo, hi, ok := strings.Cut(c.PortRange, "-")
		a, errA := strconv.ParseUint(lo, 10, 16)
		b, errB := strconv.ParseUint(hi, 10, 16)
		if !ok || errA != nil || errB != nil || a == 0 || a > b {
			bad("port_range", "%q: want MIN-MAX with 1 <= MIN <= MAX <= 65535, such as 30000-32767 (or leave it out for any port)", c.PortRange)
		} else {
			c.PortMin, c.PortMax = uint16(a), uint16(b)
		}
	}

	if (c.APITLSCert == "") != (c.APITLSKey == "") {
		set, unset := "api_tls_cert", "api_tls_key"
		if c.APITLSCert == "" {
			set, unset = unset, set
		}
		bad(set, "is given without %s: pass both (the certificate and its key) or neither", flagName(unset))
	}

	// The proxy.
	if (c.TLSCert == "") != (c.TLSKey == "") {
		set, unset := "cluster_tls_cert", "cluster_tls_key"
		if c.TLSCert == "" {
			set, unset = unset, set
		}
		bad(set, "is given without %s: pass both (the certificate and its key) or neither", flagName(unset))
	}
	if _, err := netip.ParseAddr(c.TCPBindAddr); err != nil {
		bad("tcp_bind_addr", "%q: want an IP address such as 0.0.0.0 or ::", c.TCPBindAddr)
	}
	if c.TCPIdleTimeout < 0 {
		bad("tcp_idle_timeout", "%s is negative; give a duration such as 10m", c.TCPIdleTimeout)
	}
	if c.TCPMaxConns < 0 {
		bad("tcp_max_conns", "%d is negative; give the most connections per port, such as 1024", c.TCPMaxConns)
	}

	// Workloads.
	c.SubnetPrefix = netip.Prefix{}
	if c.Subnet != "" {
		if c.SubnetPrefix, err = netip.ParsePrefix(c.Subnet); err != nil {
			bad("subnet", "%q: want an IP prefix such as 10.77.0.0/16, or none to pick a free one", c.Subnet)
		}
	}
	c.EgressAllowPrefixes = nil
	for _, s := range c.EgressAllow {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			bad("egress_allow", "%q: want an IPv4 CIDR such as 192.168.1.0/24 or 169.254.169.254/32", s)
			continue
		}
		c.EgressAllowPrefixes = append(c.EgressAllowPrefixes, p.Masked())
	}
	if c.ImageGCGrace < 0 {
		bad("image_gc_grace", "%s is negative; give a period such as 1h, or 0 to delete unused images at the next GC", c.ImageGCGrace)
	}
	if c.DefaultDiskMiB != 0 && (c.DefaultDiskMiB < spec.MinDiskMiB || c.DefaultDiskMiB > spec.MaxDiskMiB) {
		bad("default_disk", "%d MiB is outside %d-%d MiB; give a size such as 10240, or 0 for no limit", c.DefaultDiskMiB, spec.MinDiskMiB, spec.MaxDiskMiB)
	}
	if c.MaxImageSizeMiB <= 0 {
		bad("max_image_size", "%d MiB is not positive; give a size such as 10240", c.MaxImageSizeMiB)
	}
	if c.MemoryMiB < 0 {
		bad("memory", "%d MiB is negative; give the MiB workloads may reserve, such as 16384, or 0 for the host's total", c.MemoryMiB)
	}
	if c.ImageStoreMaxMiB < 0 {
		bad("image_store_max", "%d MiB is negative; give a size such as 102400, or 0 for no budget", c.ImageStoreMaxMiB)
	}
	if c.ImageGCInterval < 0 {
		bad("image_gc_interval", "%s is negative; give a period such as 1h, or 0 to turn the image GC off", c.ImageGCInterval)
	}

	c.ACME = nil
	acme := c.acme(p)
	if len(p.errs) > 0 {
		return errors.Join(p.errs...)
	}
	c.ACME = acme
	return nil
}

// problems collects what Validate finds wrong.
type problems struct {
	c    *Config
	errs []error
}

// add records a problem with key: the key's name as the user gave it,
// then format (" %q: ..." or ": %w").
func (p *problems) add(key, format string, args ...any) {
	if !strings.HasPrefix(format, ":") {
		format = " " + format
	}
	p.errs = append(p.errs, fmt.Errorf("%s"+format, append([]any{p.c.name(key)}, args...)...))
}

// acme checks the ACME settings into p and turns them into the proxy's
// setup, or nil when ACMEEmail is empty.
func (c *Config) acme(p *problems) *proxy.ACMEConfig {
	bad := p.add
	if c.ACMEEmail == "" {
		def := Default()
		for _, f := range []struct{ key, val, def string }{
			{"acme_dns", c.ACMEDNS, ""},
			{"acme_dns_config", c.ACMEDNSConfig, ""},
			{"acme_dns_resolvers", c.ACMEDNSResolvers, ""},
			{"acme_ca_root", c.ACMECARoot, ""},
			{"acme_ca", c.ACMECA, def.ACMECA},
		} {
			if f.val != f.def {
				bad(f.key, "needs --acme-email: ACME is on only with an account email for the CA")
			}
		}
		return nil
	}
	if !strings.Contains(c.ACMEEmail, "@") {
		bad("acme_email", "%q: want an email address, the CA's contact for the account", c.ACMEEmail)
	}
	if base := strings.ToLower(strings.Trim(c.BaseDomain, ".")); base == "localhost" || strings.HasSuffix(base, ".localhost") {
		bad("acme_email", "needs --cluster-base-url set to a domain whose DNS points at this node; no CA issues certificates for %q", c.BaseDomain)
	}
	a := &proxy.ACMEConfig{
		Email:      c.ACMEEmail,
		CA:         c.ACMECA,
		StorageDir: filepath.Join(c.DataDir, "acme"),
		BaseDomain: c.BaseDomain,
		HTTPAddr:   c.HTTPAddr,
		HTTPSAddr:  c.HTTPSAddr,
	}
	if a.CA == "" {
		bad("acme_ca", "is empty; leave it out for Let's Encrypt")
	}
	if c.ACMECARoot != "" {
		pool, err := proxy.LoadCARoots(c.ACMECARoot)
		if err != nil {
			bad("acme_ca_root", ": %w", err)
		}
		a.CARoots = pool
	}
	a.DisableHTTP01, a.DisableTLSALPN01 = true, true
	for ch := range strings.SplitSeq(c.ACMEChallenges, ",") {
		switch strings.TrimSpace(ch) {
		case "http-01":
			a.DisableHTTP01 = false
		case "tls-alpn-01":
			a.DisableTLSALPN01 = false
		case "":
		default:
			bad("acme_challenges", "%q: unknown challenge %q; use tls-alpn-01, http-01 or both (dns-01 is chosen by --acme-dns)", c.ACMEChallenges, strings.TrimSpace(ch))
		}
	}
	if c.ACMEDNS == "" {
		for _, f := range []struct{ key, val string }{{"acme_dns_config", c.ACMEDNSConfig}, {"acme_dns_resolvers", c.ACMEDNSResolvers}} {
			if f.val != "" {
				bad(f.key, "is a DNS-01 setting, and the DNS-01 settings need --acme-dns PROVIDER, built in: %s", strings.Join(proxy.DNSProviderNames(), ", "))
			}
		}
		if a.DisableHTTP01 && a.DisableTLSALPN01 {
			bad("acme_challenges", "names no challenge; use tls-alpn-01, http-01 or both, or --acme-dns for DNS-01")
		}
		return a
	}
	// Settings from the environment, then the key, which wins.
	settings := maps.Clone(c.dnsEnv)
	if settings == nil {
		settings = map[string]string{}
	}
	given, err := proxy.ParseDNSConfig(c.ACMEDNSConfig)
	if err != nil {
		bad("acme_dns_config", ": %w", err)
	}
	maps.Copy(settings, given)
	if err == nil {
		if a.DNSProvider, err = proxy.NewDNSProvider(c.ACMEDNS, settings); err != nil {
			bad("acme_dns", ": %w", err)
		}
	}
	for r := range strings.SplitSeq(c.ACMEDNSResolvers, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(r); err != nil {
			r = net.JoinHostPort(strings.Trim(r, "[]"), "53")
		}
		a.DNSResolvers = append(a.DNSResolvers, r)
	}
	return a
}
