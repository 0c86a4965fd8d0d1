package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/hypercore-dev/hypercore/internal/atomicfile"
	"github.com/hypercore-dev/hypercore/internal/cluster"
	"github.com/hypercore-dev/hypercore/internal/cluster/scheduler"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/network"
	"github.com/hypercore-dev/hypercore/internal/node"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/server"
	"github.com/hypercore-dev/hypercore/internal/store"
)

// daemonFlags are the node daemon's settings. The first five are seed 000's.
type daemonFlags struct {
	clusterBind string
	baseDomain  string
	tlsCert     string
	tlsKey      string
	apiAddr     string
	nodeName    string
	httpAddr    string
	httpsAddr   string
	tcpBind     string
	tcpIdle     time.Duration
	tcpMaxConns int
	runtime     string
	subnet      string
	bridge      string
	logLevel    string
	imageGC     time.Duration

	// The cluster: see internal/cluster.
	joinToken     string
	server        bool
	public        bool
	advertise     string
	placement     string
	failoverGrace time.Duration
	portRange     string
	fastFailure   bool

	// ACME: certificates from a CA such as Let's Encrypt, see acmeConfig.
	acmeEmail      string
	acmeCA         string
	acmeCARoot     string
	acmeDNS        string
	acmeDNSConfig  string
	acmeResolvers  string
	acmeChallenges string
}

func newClusterCmd(api *apiFlags) *cobra.Command {
	d := &daemonFlags{}
	cmd := &cobra.Command{
		Use:   "cluster [flags] [JOIN_ADDR:7946...]",
		Short: "Run a hypercore node (API, proxy and workloads)",
		Long: `Run a node. With no flags it runs on embedded defaults: the API on
127.0.0.1:8000 with a token it writes to <data-dir>/api-token, the proxy on
:80 serving <id>.localhost, and runc for workloads.

The node keeps running workloads across its own restarts and crashes: a new
'hypercore cluster' on the same --data-dir re-adopts them.

A node given no JOIN_ADDR starts a new cluster: it is its first raft server,
makes the cluster CA and gossip key, and writes a join token to
<data-dir>/join-token. Other nodes join with that token and the first
node's gossip address; give --server to the first 1, 3 or 5. Gossip uses
--cluster-bind-addr (TCP and UDP), node RPC with mutual TLS its port + 1,
raft its port + 2. See docs/cluster.md.`,
		Example: `  hypercore cluster
  hypercore cluster --server --cluster-bind-addr 10.0.0.1:7946
  hypercore cluster --server --cluster-bind-addr 10.0.0.2:7946 --join-token "$(cat join-token)" 10.0.0.1:7946
  hypercore cluster --cluster-base-url deployments.example.com \
      --cluster-tls-cert fullchain.pem --cluster-tls-key privkey.pem
  hypercore cluster --cluster-base-url deployments.example.com --acme-email ops@example.com
  HYPERCORE_ACME_DNS_KEY=base64secret hypercore cluster --cluster-base-url deployments.example.com \
      --acme-email ops@example.com --acme-dns rfc2136 \
      --acme-dns-config server=ns1.example.com:53,key_name=acme-key`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDaemon(cmd.Context(), api.dataDir, d, args)
		},
	}
	f := cmd.Flags()
	f.StringVar(&d.clusterBind, "cluster-bind-addr", "0.0.0.0:7946", "gossip address IP:PORT; node RPC (mutual TLS, joins) uses PORT+1 and raft PORT+2")
	f.StringVar(&d.joinToken, "join-token", "", "token that admits this node to the cluster at JOIN_ADDR, from <data-dir>/join-token on the first node (or HYPERCORE_JOIN_TOKEN); needed on the first start only")
	f.BoolVar(&d.server, "server", false, "keep the cluster state (a raft voter); give it to the first 1, 3 or 5 nodes. The first node always is one")
	f.BoolVar(&d.public, "public", true, "take workloads with raw TCP public ports (--public=false for a private node)")
	f.StringVar(&d.advertise, "cluster-advertise-addr", "", "IP other nodes reach this one at (default: the --cluster-bind-addr IP, or the first global address)")
	f.StringVar(&d.placement, "placement", "binpack", "how to pick among nodes that fit: binpack (fill nodes) or spread")
	f.DurationVar(&d.failoverGrace, "failover-grace", cluster.DefaultFailoverGrace, "how long a failed node keeps its workloads before they are placed elsewhere")
	f.StringVar(&d.portRange, "port-range", "", "public TCP ports this node may open, MIN-MAX (default: any)")
	f.BoolVar(&d.fastFailure, "fast-failure", false, "detect failed nodes in 2-3 s instead of about 4 s, with more gossip traffic")
	f.StringVar(&d.baseDomain, "cluster-base-url", "localhost", "base domain: workloads are served at <id>.<base>")
	f.StringVar(&d.tlsCert, "cluster-tls-cert", "", "TLS certificate (PEM, e.g. a *.<base> wildcard) to serve HTTPS; reloaded when the file changes")
	f.StringVar(&d.tlsKey, "cluster-tls-key", "", "TLS private key (PEM) for --cluster-tls-cert")
	f.StringVar(&d.apiAddr, "grpc-bind-addr", defaultAPIAddr, "API address (gRPC, Connect and JSON on one port)")
	f.StringVar(&d.nodeName, "node-name", "", "node name (default: the hostname)")
	f.StringVar(&d.httpAddr, "http-addr", ":80", "proxy HTTP address")
	f.StringVar(&d.httpsAddr, "https-addr", ":443", "proxy HTTPS address, used with --cluster-tls-cert or --acme-email")
	f.StringVar(&d.tcpBind, "tcp-bind-addr", "0.0.0.0", "host address that raw TCP public ports (any port but 80/443, or tcp:N) listen on")
	f.DurationVar(&d.tcpIdle, "tcp-idle-timeout", 10*time.Minute, "close a raw TCP connection after this long with no traffic either way")
	f.IntVar(&d.tcpMaxConns, "tcp-max-conns", 1024, "most open connections per raw TCP public port; more are refused")
	f.StringVar(&d.runtime, "runtime", "runc", "OCI runtime for containers: runc or crun")
	f.StringVar(&d.subnet, "subnet", "10.77.0.0/16", "workload network; the bridge takes its first address")
	f.StringVar(&d.bridge, "bridge", "hc0", "name of the node's bridge")
	f.StringVar(&d.logLevel, "log-level", "info", "debug, info, warn or error")
	f.DurationVar(&d.imageGC, "image-gc-interval", node.DefaultImageGCInterval, fmt.Sprintf("delete images no workload on this node uses (in any state) this often, the first time %g min after start; 0 never ('hypercore image prune' still does)", node.FirstImageGC.Minutes()))
	f.StringVar(&d.acmeEmail, "acme-email", "", "get certificates from an ACME CA with this account email (agrees to the CA's terms): per <id>.<base> on demand, or *.<base> with --acme-dns; stored in <data-dir>/acme")
	f.StringVar(&d.acmeCA, "acme-ca", proxy.LetsEncrypt, "ACME directory URL")
	f.StringVar(&d.acmeCARoot, "acme-ca-root", "", "PEM file of roots to trust for the ACME CA's own HTTPS (a private CA)")
	f.StringVar(&d.acmeDNS, "acme-dns", "", "DNS provider for one *.<base> wildcard through DNS-01; built in: "+strings.Join(proxy.DNSProviderNames(), ", "))
	f.StringVar(&d.acmeDNSConfig, "acme-dns-config", "", "DNS provider settings key=value,...; each may instead be in HYPERCORE_ACME_DNS_<KEY> (better for secrets)")
	f.StringVar(&d.acmeResolvers, "acme-dns-resolvers", "", "DNS servers host[:port],... used to find the zone of _acme-challenge.<base> (default: the system's)")
	f.StringVar(&d.acmeChallenges, "acme-challenges", "tls-alpn-01,http-01", "challenge types for per-name certificates: tls-alpn-01 (on --https-addr) and/or http-01 (on --http-addr)")
	cmd.AddCommand(newClusterSpawnCmd(api))
	return cmd
}

// newClusterSpawnCmd keeps seed 000's 'hypercore cluster spawn
// --grpc-bind-addr ADDR --ports 443:3000 --image-ref REF'.
func newClusterSpawnCmd(api *apiFlags) *cobra.Command {
	cmd := newSpawnCmd(api)
	cmd.Use = "spawn --grpc-bind-addr ADDR --ports 443:3000 --image-ref REF"
	cmd.Short = "Spawn a workload on the cluster (seed-compatible form of 'hypercore spawn')"
	var grpcAddr string
	cmd.Flags().StringVar(&grpcAddr, "grpc-bind-addr", "", "API address of a node (same as --addr)")
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if grpcAddr != "" {
			api.addr = grpcAddr
		}
		return run(c, args)
	}
	return cmd
}

func runDaemon(ctx context.Context, dataDir string, d *daemonFlags, joins []string) error {
	log, err := newLogger(d.logLevel)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("hypercore cluster must run as root: it makes network namespaces, bridges and containers")
	}
	if _, _, err := net.SplitHostPort(d.clusterBind); err != nil {
		return fmt.Errorf("--cluster-bind-addr %q: %w", d.clusterBind, err)
	}
	ccfg, err := d.clusterConfig(dataDir, joins, log)
	if err != nil {
		return err
	}
	subnet, err := netip.ParsePrefix(d.subnet)
	if err != nil {
		return fmt.Errorf("--subnet %q: %w", d.subnet, err)
	}
	if d.imageGC < 0 {
		return fmt.Errorf("--image-gc-interval %s is negative; give a period such as 1h, or 0 to turn the image GC off", d.imageGC)
	}
	if (d.tlsCert == "") != (d.tlsKey == "") {
		return errors.New("--cluster-tls-cert and --cluster-tls-key go together: pass both or neither")
	}
	if _, err := d.acmeConfig(dataDir); err != nil { // fail before making anything
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create --data-dir %s: %w", dataDir, err)
	}
	token, err := loadOrCreateToken(filepath.Join(dataDir, tokenFile))
	if err != nil {
		return err
	}
	// The node's name and certificates come first: the name goes into
	// every workload record and cgroup.
	ccfg.NodeName = d.nodeName
	id, err := cluster.Identify(ctx, ccfg)
	if err != nil {
		return err
	}
	d.nodeName = id.Name

	st, err := store.OpenBolt(filepath.Join(dataDir, "state.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	images, err := image.Open(filepath.Join(dataDir, "images"))
	if err != nil {
		return err
	}
	defer images.Close()
	netm, err := network.New(network.Config{Bridge: d.bridge, Subnet: subnet, StateDir: filepath.Join(dataDir, "network")})
	if err != nil {
		return err
	}
	defer netm.Close()
	drivers, err := newDrivers(log, dataDir, d)
	if err != nil {
		return err
	}
	// Deferred before the node's Close, so it runs after it, when no
	// workload cgroup can be created any more.
	defer removeCgroupParent(log, d)
	routes := proxy.NewTable()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The cluster makes and starts the node, and closes it: it owns the
	// workloads' life, and the node reports to it.
	ccfg.BaseDomain = d.baseDomain
	cl, err := cluster.Start(ctx, ccfg, id,
		node.Config{BaseDomain: d.baseDomain, ImageGCInterval: d.imageGC, Log: log},
		node.Parts{Store: st, Images: images, Network: netm, Routes: routes, Drivers: drivers},
		routes)
	if err != nil {
		return err
	}
	defer cl.Close()

	servers, err := startServers(log, dataDir, d, cl, routes, token)
	if err != nil {
		return err
	}
	log.Info("hypercore node ready", "node", id.Name, "api", d.apiAddr, "proxy", d.httpAddr, "base", d.baseDomain, "token_file", filepath.Join(dataDir, tokenFile))
	<-ctx.Done()
	log.Info("shutting down; workloads keep running and are re-adopted at next start")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(sctx)
	}
	return nil
}

// clusterConfig checks the cluster flags; the node name is filled in once
// the node knows it.
func (d *daemonFlags) clusterConfig(dataDir string, joins []string, log *slog.Logger) (cluster.Config, error) {
	strategy, err := scheduler.ParseStrategy(d.placement)
	if err != nil {
		return cluster.Config{}, fmt.Errorf("--placement: %w", err)
	}
	cfg := cluster.Config{
		DataDir: dataDir, BindAddr: d.clusterBind, AdvertiseIP: d.advertise, Bridge: d.bridge,
		Joins: joins, JoinToken: d.joinToken, Server: d.server, Public: d.public,
		Strategy: strategy, FailoverGrace: d.failoverGrace, APIAddr: d.apiAddr,
		FastFailure: d.fastFailure, Log: log,
	}
	if cfg.JoinToken == "" {
		cfg.JoinToken = strings.TrimSpace(os.Getenv("HYPERCORE_JOIN_TOKEN"))
	}
	if d.advertise != "" && net.ParseIP(d.advertise) == nil {
		return cluster.Config{}, fmt.Errorf("--cluster-advertise-addr %q: want an IP address", d.advertise)
	}
	if d.portRange != "" {
		lo, hi, ok := strings.Cut(d.portRange, "-")
		a, errA := strconv.ParseUint(lo, 10, 16)
		b, errB := strconv.ParseUint(hi, 10, 16)
		if !ok || errA != nil || errB != nil || a == 0 || a > b {
			return cluster.Config{}, fmt.Errorf("--port-range %q: want MIN-MAX with 1 <= MIN <= MAX <= 65535", d.portRange)
		}
		cfg.PortMin, cfg.PortMax = uint16(a), uint16(b)
	}
	if d.failoverGrace < 0 {
		return cluster.Config{}, errors.New("--failover-grace must not be negative")
	}
	return cfg, nil
}

// startServers binds every listener first, so a port in use fails the start
// with a clear error instead of leaving a half-running node. Raw TCP public
// ports open after that, as routes need them.
func startServers(log *slog.Logger, dataDir string, d *daemonFlags, cl *cluster.Cluster, routes *proxy.Table, token string) (_ []*http.Server, retErr error) {
	if _, err := netip.ParseAddr(d.tcpBind); err != nil {
		return nil, fmt.Errorf("--tcp-bind-addr %q: want an IP address such as 0.0.0.0 or ::", d.tcpBind)
	}
	var certs proxy.CertSources
	if d.tlsCert != "" {
		cf, err := proxy.NewCertFile(d.tlsCert, d.tlsKey, log)
		if err != nil {
			return nil, fmt.Errorf("--cluster-tls-cert/--cluster-tls-key: %w", err)
		}
		certs = append(certs, cf)
		log.Info("serving HTTPS with a certificate from files; it is reloaded when they change",
			"cert", d.tlsCert, "names", cf.Leaf().DNSNames, "not_after", cf.Leaf().NotAfter)
	}
	// ACME comes after the files, so files win for the names they cover.
	acmeCfg, err := d.acmeConfig(dataDir)
	if err != nil {
		return nil, err
	}
	var acme *proxy.ACME
	if acmeCfg != nil {
		acmeCfg.Table, acmeCfg.Log = routes, log
		if acme, err = proxy.NewACME(*acmeCfg); err != nil {
			return nil, err
		}
		defer func() {
			if retErr != nil {
				acme.Stop() // no server will stop it
			}
		}()
		certs = append(certs, acme)
		if acme.Wildcard() != "" {
			log.Info("ACME: one wildcard certificate through DNS-01", "name", acme.Wildcard(), "dns", d.acmeDNS, "ca", acmeCfg.CA, "storage", acmeCfg.StorageDir)
		} else {
			log.Info("ACME: a certificate per workload, obtained at the first handshake for <id>."+d.baseDomain,
				"challenges", d.acmeChallenges, "ca", acmeCfg.CA, "storage", acmeCfg.StorageDir)
		}
	}
	// The daemon's own ports are never given to a workload as raw TCP.
	reserve := func(addr, what string) {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			if num, err := strconv.ParseUint(port, 10, 16); err == nil && num != 0 {
				routes.Reserve(uint16(num), what)
			}
		}
	}
	reserve(d.apiAddr, "the API (--grpc-bind-addr)")
	reserve(d.clusterBind, "cluster gossip (--cluster-bind-addr)")
	if rpc, raft, err := cluster.PeerAddrs(d.clusterBind); err == nil {
		reserve(rpc, "node RPC (--cluster-bind-addr port + 1)")
		reserve(raft, "raft (--cluster-bind-addr port + 2)")
	}
	reserve(d.httpAddr, "the HTTP proxy (--http-addr)")
	if certs != nil {
		reserve(d.httpsAddr, "the HTTPS proxy (--https-addr)")
	}

	p := proxy.New(d.baseDomain, routes, log)
	apiOpts := server.Options{Token: token, TokenPath: filepath.Join(dataDir, tokenFile), Version: version, Log: log}
	apiHandler := server.New(cl, apiOpts)
	apiSrv := &http.Server{Handler: apiHandler, ReadHeaderTimeout: 10 * time.Second, Protocols: new(http.Protocols)}
	apiSrv.Protocols.SetHTTP1(true)
	apiSrv.Protocols.SetUnencryptedHTTP2(true) // gRPC clients without TLS
	type bound struct {
		srv *http.Server
		l   net.Listener
	}
	var all []bound
	listen := func(addr, what string, srv *http.Server) error {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, b := range all {
				b.l.Close()
			}
			return fmt.Errorf("%s: listen on %s: %w (is another hypercore or web server running? choose another address with its flag)", what, addr, err)
		}
		all = append(all, bound{srv, l})
		return nil
	}
	if err := listen(d.apiAddr, "API (--grpc-bind-addr)", apiSrv); err != nil {
		return nil, err
	}
	httpHandler := p.Handler(80)
	if certs != nil {
		httpsSrv := proxy.HTTPSServer(d.httpsAddr, p.Handler(443), certs, log)
		if err := listen(d.httpsAddr, "proxy HTTPS (--https-addr)", httpsSrv); err != nil {
			return nil, err
		}
		httpHandler = proxy.RedirectHTTPS(d.httpsAddr)
		if acme != nil {
			// The CA's HTTP-01 requests are answered before the redirect.
			httpHandler = acme.HTTPChallengeHandler(httpHandler)
			httpsSrv.RegisterOnShutdown(acme.Stop)
		}
	}
	httpSrv := proxy.Server(d.httpAddr, httpHandler, log)
	if err := listen(d.httpAddr, "proxy HTTP (--http-addr)", httpSrv); err != nil {
		return nil, err
	}
	tcp := proxy.NewTCP(routes, proxy.TCPOptions{BindAddr: d.tcpBind, IdleTimeout: d.tcpIdle, MaxConns: d.tcpMaxConns, Log: log})
	httpSrv.RegisterOnShutdown(func() { tcp.Close() })
	if err := atomicfile.WriteFile(filepath.Join(dataDir, addrFile), []byte(clientAddr(all[0].l.Addr())+"\n"), 0o600); err != nil {
		tcp.Close()
		return nil, err
	}
	if acme != nil {
		// After the listeners: the wildcard's issuance may start at once.
		if err := acme.Start(); err != nil {
			tcp.Close()
			for _, b := range all {
				b.l.Close()
			}
			return nil, err
		}
	}
	servers := make([]*http.Server, 0, len(all))
	for _, b := range all {
		servers = append(servers, b.srv)
		go func() {
			// The proxy's ports get its fast path; the others are
			// served by net/http as usual (proxy.Serve tells them apart).
			err := proxy.Serve(b.srv, b.l)
			if err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("server stopped", "addr", b.l.Addr(), "err", err)
			}
		}()
	}
	return servers, nil
}

// acmeConfig turns the --acme-* flags into the ACME setup, or nil when
// --acme-email is not given. It only checks and reads (the CA root file,
// the environment), so runDaemon calls it first to fail before making
// anything.
func (d *daemonFlags) acmeConfig(dataDir string) (*proxy.ACMEConfig, error) {
	if d.acmeEmail == "" {
		for _, f := range []struct{ name, val, def string }{
			{"--acme-dns", d.acmeDNS, ""},
			{"--acme-dns-config", d.acmeDNSConfig, ""},
			{"--acme-dns-resolvers", d.acmeResolvers, ""},
			{"--acme-ca-root", d.acmeCARoot, ""},
			{"--acme-ca", d.acmeCA, proxy.LetsEncrypt},
		} {
			if f.val != f.def {
				return nil, fmt.Errorf("%s needs --acme-email: ACME is on only with an account email for the CA", f.name)
			}
		}
		return nil, nil
	}
	if !strings.Contains(d.acmeEmail, "@") {
		return nil, fmt.Errorf("--acme-email %q: want an email address, the CA's contact for the account", d.acmeEmail)
	}
	if base := strings.ToLower(strings.Trim(d.baseDomain, ".")); base == "localhost" || strings.HasSuffix(base, ".localhost") {
		return nil, fmt.Errorf("--acme-email needs --cluster-base-url set to a domain whose DNS points at this node; no CA issues certificates for %q", d.baseDomain)
	}
	c := &proxy.ACMEConfig{
		Email:      d.acmeEmail,
		CA:         d.acmeCA,
		StorageDir: filepath.Join(dataDir, "acme"),
		BaseDomain: d.baseDomain,
		HTTPAddr:   d.httpAddr,
		HTTPSAddr:  d.httpsAddr,
	}
	if c.CA == "" {
		return nil, errors.New("--acme-ca is empty; leave it out for Let's Encrypt")
	}
	if d.acmeCARoot != "" {
		pool, err := proxy.LoadCARoots(d.acmeCARoot)
		if err != nil {
			return nil, fmt.Errorf("--acme-ca-root: %w", err)
		}
		c.CARoots = pool
	}
	c.DisableHTTP01, c.DisableTLSALPN01 = true, true
	for ch := range strings.SplitSeq(d.acmeChallenges, ",") {
		switch strings.TrimSpace(ch) {
		case "http-01":
			c.DisableHTTP01 = false
		case "tls-alpn-01":
			c.DisableTLSALPN01 = false
		case "":
		default:
			return nil, fmt.Errorf("--acme-challenges: unknown challenge %q; use tls-alpn-01, http-01 or both (dns-01 is chosen by --acme-dns)", ch)
		}
	}
	if d.acmeDNS == "" {
		if d.acmeDNSConfig != "" || d.acmeResolvers != "" {
			return nil, errors.New("--acme-dns-config and --acme-dns-resolvers need --acme-dns PROVIDER, built in: " + strings.Join(proxy.DNSProviderNames(), ", "))
		}
		if c.DisableHTTP01 && c.DisableTLSALPN01 {
			return nil, errors.New("--acme-challenges names no challenge; use tls-alpn-01, http-01 or both, or --acme-dns for DNS-01")
		}
		return c, nil
	}
	// Settings from the environment, then the flag, which wins.
	settings := proxy.DNSConfigFromEnv(d.acmeDNS, os.Getenv)
	fromFlag, err := proxy.ParseDNSConfig(d.acmeDNSConfig)
	if err != nil {
		return nil, fmt.Errorf("--acme-dns-config: %w", err)
	}
	maps.Copy(settings, fromFlag)
	if c.DNSProvider, err = proxy.NewDNSProvider(d.acmeDNS, settings); err != nil {
		return nil, fmt.Errorf("--acme-dns: %w", err)
	}
	for r := range strings.SplitSeq(d.acmeResolvers, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(r); err != nil {
			r = net.JoinHostPort(strings.Trim(r, "[]"), "53")
		}
		c.DNSResolvers = append(c.DNSResolvers, r)
	}
	return c, nil
}

// clientAddr is the address a local CLI should dial: a wildcard bind is
// reached on loopback.
func clientAddr(a net.Addr) string {
	host, port, _ := net.SplitHostPort(a.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// loadOrCreateToken returns the API token, making a random one on first start.
func loadOrCreateToken(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		if t := strings.TrimSpace(string(b)); len(t) >= 32 {
			return t, nil
		}
		return "", fmt.Errorf("API token in %s is shorter than 32 characters; delete the file to make a new one", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read API token %s: %w", path, err)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	t := hex.EncodeToString(b[:])
	if err := atomicfile.WriteFile(path, []byte(t+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write API token: %w", err)
	}
	return t, nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
