package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/hypercore-dev/hypercore/internal/config"
	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/network"
	"github.com/hypercore-dev/hypercore/internal/node"
	"github.com/hypercore-dev/hypercore/internal/nodeid"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/rootless"
	"github.com/hypercore-dev/hypercore/internal/server"
	"github.com/hypercore-dev/hypercore/internal/slurm"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/volume"
)

func newClusterCmd(api *apiFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster [flags] [JOIN_ADDR:7946...]",
		Short: "Run a hypercore node (API, proxy and workloads)",
		Long: `Run a node. With no flags it runs on embedded defaults: the API on
127.0.0.1:8000 with a token it writes to <data-dir>/api-token, the proxy on
:80 serving <id>.localhost, and runc for workloads.

The API speaks TLS with the node's certificate from the cluster CA
(<data-dir>/cluster/pki/ca.crt), or --api-tls-cert/--api-tls-key; on a
loopback address it answers plain HTTP too, on any other TLS only.

The node keeps running workloads across its own restarts and crashes: a new
'hypercore cluster' on the same --data-dir re-adopts them.

A node given no JOIN_ADDR starts a new cluster: it is its first raft server,
makes the cluster CA and gossip key, and writes a join token to
<data-dir>/join-token. Other nodes join with that token and the first
node's cluster address; give --server to the first 1, 3 or 5. Gossip,
node RPC and raft (mutual TLS) all use the one port of
--cluster-bind-addr, TCP and UDP, so nodes sharing a host each need only
their own. See docs/cluster.md.

Every setting can also come from the environment, as HYPERCORE_ and the
flag's name in upper case with '_' for '-' (HYPERCORE_JOIN_TOKEN for
--join-token, HYPERCORE_JOIN for the JOIN_ADDRs, comma-separated), or from
a TOML file given with --config FILE (or HYPERCORE_CONFIG), whose keys are
the flags' names with '_' for '-' (join_token = "...", join = [...]).
A flag beats the environment, which beats the file; unknown keys in the
file are errors. Every key is in docs/config.md.

Without root on the host, run it as root of a user namespace (unshare
--map-auto --map-root-user --net --mount, or rootlesskit): it then runs
rootless, logs which limits it cannot enforce, and keeps its data under
$XDG_RUNTIME_DIR or $TMPDIR. In a Slurm job it offers the job's cores and
memory; scripts/hypercore.slurm starts one node per allocated machine. See
docs/hpc.md.`,
		Example: `  hypercore cluster
  hypercore cluster --server --cluster-bind-addr 10.0.0.1:7946
  hypercore cluster --server --cluster-bind-addr 10.0.0.2:7946 --join-token "$(cat join-token)" 10.0.0.1:7946
  hypercore cluster --config /etc/hypercore/cluster.toml
  hypercore cluster --cluster-base-url deployments.example.com \
      --cluster-tls-cert fullchain.pem --cluster-tls-key privkey.pem
  hypercore cluster --cluster-base-url deployments.example.com --acme-email ops@example.com
  HYPERCORE_ACME_DNS_KEY=base64secret hypercore cluster --cluster-base-url deployments.example.com \
      --acme-email ops@example.com --acme-dns rfc2136 \
      --acme-dns-config server=ns1.example.com:53,key_name=acme-key`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// --data-dir is the root's flag; cmd.Flags() holds it too.
			cfg, err := config.Load(config.Sources{Flags: cmd.Flags(), Args: args})
			if err != nil {
				return err
			}
			return daemon(cmd.Context(), cfg)
		},
	}
	config.AddFlags(cmd.Flags())
	cmd.AddCommand(newClusterSpawnCmd(api))
	return cmd
}

// newClusterSpawnCmd keeps the classic 'hypercore cluster spawn
// --grpc-bind-addr ADDR --ports 443:3000 --image-ref REF'.
func newClusterSpawnCmd(api *apiFlags) *cobra.Command {
	cmd := newSpawnCmd(api)
	cmd.Use = "spawn --grpc-bind-addr ADDR --ports 443:3000 --image-ref REF"
	cmd.Short = "Spawn a workload on the cluster (the classic form of 'hypercore spawn')"
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

// daemon is runDaemon; tests replace it, so that no test can start a
// real node.
var daemon = runDaemon

// runDaemon runs the node on checked settings until ctx ends or a signal
// comes.
func runDaemon(ctx context.Context, cfg *config.Config) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.Level}))
	if os.Geteuid() != 0 {
		return errors.New("hypercore cluster must run as root, or as root of a user namespace without root on the host (`unshare --map-auto --map-root-user --net --mount hypercore cluster`, or rootlesskit; see docs/hpc.md): it makes network namespaces, bridges and containers")
	}
	raiseOpenFiles(log)
	userns := rootless.Detect()
	if userns.Rootless {
		log.Info("rootless: running in a user namespace without the host's root; workloads share its user namespace and get no cgroup limits", "host_uid", userns.HostUID, "mapped_gids", userns.GIDs)
		if cfg.DefaultDiskMiB > 0 {
			log.Warn("rootless: no disk limits (loop devices need the host's root); --default-disk is ignored and spawns that give disk are refused", "default_disk_mib", cfg.DefaultDiskMiB)
			cfg.DefaultDiskMiB = 0
		}
	}
	capacity, inJob, err := slurm.FromEnv(os.Getenv)
	if err != nil {
		return err
	}
	if inJob {
		log.Info("capacity from the Slurm job's allocation", "cores", capacity.Cores, "memory_mib", capacity.MemoryMiB)
	}
	dataDir := cfg.DataDir
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("create --data-dir %s: %w", dataDir, err)
	}
	token, err := loadOrCreateToken(filepath.Join(dataDir, tokenFile))
	if err != nil {
		return err
	}
	// The node's name and certificates come first: the name goes into
	// every workload record and cgroup.
	ccfg := clusterConfig(cfg, log)
	ccfg.Ephemeral = cfg.Ephemeral
	id, err := cluster.Identify(ctx, ccfg)
	if err != nil {
		return err
	}
	nodeName := id.Name
	// The bridge, subnet, nftables tables and cgroup parent are this
	// node's own, so nodes can share a host. Before the store is opened,
	// whose file tells a data dir from before node ids.
	names, err := nodeid.Load(dataDir, nodeName)
	if err != nil {
		return err
	}

	st, err := store.OpenBolt(filepath.Join(dataDir, "state.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	images, err := image.OpenWith(filepath.Join(dataDir, "images"), image.Options{
		MaxImageSize: int64(cfg.MaxImageSizeMiB) << 20, MaxImageSizeFlag: "--max-image-size",
		MaxStoreSize: int64(cfg.ImageStoreMaxMiB) << 20, MaxStoreSizeFlag: "--image-store-max",
	})
	if err != nil {
		return err
	}
	defer images.Close()
	netm, err := newNetwork(cfg, names, &ccfg)
	if err != nil {
		return err
	}
	defer netm.Close()
	vols, err := volume.Open(filepath.Join(dataDir, "volumes"))
	if err != nil {
		return err
	}
	drivers, err := newDrivers(log, cfg, names.CgroupParent, userns)
	if err != nil {
		return err
	}
	// Deferred before the node's Close, so it runs after it, when no
	// workload cgroup can be created any more.
	defer removeCgroupParent(log, names.CgroupParent)
	routes := proxy.NewTable()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// The cluster makes and starts the node, and closes it: it owns the
	// workloads' life, and the node reports to it.
	cl, err := cluster.Start(ctx, ccfg, id,
		node.Config{BaseDomain: cfg.BaseDomain, ImageGCInterval: cfg.ImageGCInterval, ImageGCGrace: cfg.ImageGCGrace, Log: log,
			// An explicit --memory wins over a batch job's allocation.
			Cores: capacity.Cores, MemoryMiB: cmp.Or(int64(cfg.MemoryMiB), capacity.MemoryMiB)},
		node.Parts{Store: st, Images: images, Network: netm, Routes: routes, Drivers: drivers, Volumes: vols},
		routes)
	if err != nil {
		return err
	}
	defer cl.Close()

	apiCert, err := apiCertificate(cfg, id)
	if err != nil {
		return err
	}
	servers, err := startServers(log, cfg, cl, routes, token, apiCert)
	if err != nil {
		return err
	}
	log.Info("hypercore node ready", "node", id.Name, "api", cfg.APIAddr, "api_plain_http", server.PlainAllowed(cfg.APIAddr), "api_ca", cluster.CACertFile(dataDir), "proxy", cfg.HTTPAddr, "base", cfg.BaseDomain, "token_file", filepath.Join(dataDir, tokenFile))
	<-ctx.Done()
	if cfg.Ephemeral {
		log.Info("shutting down an ephemeral node: stopping and removing its workloads, then leaving the cluster")
	} else {
		log.Info("shutting down; workloads keep running and are re-adopted at next start")
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(sctx)
	}
	return nil
}

// newNetwork opens the node's workload network on its own bridge and
// tables, in a subnet that overlaps nothing of the host's, and tells ccfg
// the bridge, which is never advertised.
func newNetwork(cfg *config.Config, names nodeid.Names, ccfg *cluster.Config) (*network.Manager, error) {
	bridge := cmp.Or(cfg.Bridge, names.Bridge)
	ccfg.Bridge = bridge
	stateDir := filepath.Join(cfg.DataDir, "network")
	subnet, err := network.ChooseSubnet(cfg.SubnetPrefix, stateDir, bridge)
	if err != nil {
		return nil, err
	}
	var dns []netip.Addr
	for _, s := range driver.Nameservers() {
		if a, err := netip.ParseAddr(s); err == nil {
			dns = append(dns, a)
		}
	}
	return network.New(network.Config{
		Bridge: bridge, Subnet: subnet, StateDir: stateDir, Table: names.Table,
		EgressAllow: cfg.EgressAllowPrefixes, Nameservers: dns,
	})
}

// clusterConfig is the cluster's part of the settings.
func clusterConfig(cfg *config.Config, log *slog.Logger) cluster.Config {
	return cluster.Config{
		NodeName: cfg.NodeName, DataDir: cfg.DataDir, BindAddr: cfg.ClusterBindAddr,
		AdvertiseIP: cfg.ClusterAdvertiseAddr, Bridge: cfg.Bridge,
		Joins: cfg.Join, JoinToken: cfg.JoinToken, Server: cfg.Server, Public: cfg.Public,
		PortMin: cfg.PortMin, PortMax: cfg.PortMax,
		Strategy: cfg.Strategy, FailoverGrace: cfg.FailoverGrace, APIAddr: cfg.APIAddr,
		FastFailure: cfg.FastFailure, BaseDomain: cfg.BaseDomain, Log: log,
	}
}

// startServers binds every listener first, so a port in use fails the start
// with a clear error instead of leaving a half-running node. Raw TCP public
// ports open after that, as routes need them.
func startServers(log *slog.Logger, cfg *config.Config, cl *cluster.Cluster, routes *proxy.Table, token string, apiCert tls.Certificate) (_ []*http.Server, retErr error) {
	dataDir := cfg.DataDir
	var certs proxy.CertSources
	if cfg.TLSCert != "" {
		cf, err := proxy.NewCertFile(cfg.TLSCert, cfg.TLSKey, log)
		if err != nil {
			return nil, fmt.Errorf("--cluster-tls-cert/--cluster-tls-key: %w", err)
		}
		certs = append(certs, cf)
		log.Info("serving HTTPS with a certificate from files; it is reloaded when they change",
			"cert", cfg.TLSCert, "names", cf.Leaf().DNSNames, "not_after", cf.Leaf().NotAfter)
	}
	// ACME comes after the files, so files win for the names they cover.
	var acme *proxy.ACME
	if cfg.ACME != nil {
		acmeCfg := *cfg.ACME
		acmeCfg.Table, acmeCfg.Log = routes, log
		var err error
		if acme, err = proxy.NewACME(acmeCfg); err != nil {
			return nil, err
		}
		defer func() {
			if retErr != nil {
				acme.Stop() // no server will stop it
			}
		}()
		certs = append(certs, acme)
		if acme.Wildcard() != "" {
			log.Info("ACME: one wildcard certificate through DNS-01", "name", acme.Wildcard(), "dns", cfg.ACMEDNS, "ca", acmeCfg.CA, "storage", acmeCfg.StorageDir)
		} else {
			log.Info("ACME: a certificate per workload, obtained at the first handshake for <id>."+cfg.BaseDomain,
				"challenges", cfg.ACMEChallenges, "ca", acmeCfg.CA, "storage", acmeCfg.StorageDir)
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
	reserve(cfg.APIAddr, "the API (--grpc-bind-addr)")
	reserve(cfg.ClusterBindAddr, "the cluster port: gossip, node RPC and raft (--cluster-bind-addr)")
	reserve(cfg.HTTPAddr, "the HTTP proxy (--http-addr)")
	if certs != nil {
		reserve(cfg.HTTPSAddr, "the HTTPS proxy (--https-addr)")
	}

	p := proxy.New(cfg.BaseDomain, routes, log)
	apiOpts := server.Options{Token: token, Tokens: cl, Version: version, Log: log}
	apiHandler := server.New(cl, apiOpts)
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
	// The API's server is made when it starts serving (server.ServeAPI):
	// TLS, plus plain HTTP on loopback.
	if err := listen(cfg.APIAddr, "API (--grpc-bind-addr)", nil); err != nil {
		return nil, err
	}
	httpHandler := p.Handler(80)
	if certs != nil {
		httpsSrv := proxy.HTTPSServer(cfg.HTTPSAddr, p.Handler(443), certs, log)
		if err := listen(cfg.HTTPSAddr, "proxy HTTPS (--https-addr)", httpsSrv); err != nil {
			return nil, err
		}
		httpHandler = proxy.RedirectHTTPS(cfg.HTTPSAddr)
		if acme != nil {
			// The CA's HTTP-01 requests are answered before the redirect.
			httpHandler = acme.HTTPChallengeHandler(httpHandler)
			httpsSrv.RegisterOnShutdown(acme.Stop)
		}
	}
	httpSrv := proxy.Server(cfg.HTTPAddr, httpHandler, log)
	if err := listen(cfg.HTTPAddr, "proxy HTTP (--http-addr)", httpSrv); err != nil {
		return nil, err
	}
	tcp := proxy.NewTCP(routes, proxy.TCPOptions{BindAddr: cfg.TCPBindAddr, IdleTimeout: cfg.TCPIdleTimeout, MaxConns: cfg.TCPMaxConns, Log: log})
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
		if b.srv == nil {
			servers = append(servers, server.ServeAPI(b.l, apiHandler, server.TLSConfig(apiCert), server.PlainAllowed(cfg.APIAddr), func(err error) {
				log.Error("API server stopped", "addr", b.l.Addr(), "err", err)
			})...)
			continue
		}
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

// apiCertificate is what the API serves TLS with: --api-tls-cert and
// --api-tls-key when given, else the node's certificate from the cluster
// CA, which verifies for loopback, the advertised address and the API's
// bind address.
func apiCertificate(cfg *config.Config, id *cluster.Identity) (tls.Certificate, error) {
	if cfg.APITLSCert == "" {
		return id.APICertificate(), nil
	}
	c, err := tls.LoadX509KeyPair(cfg.APITLSCert, cfg.APITLSKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("--api-tls-cert/--api-tls-key: %w", err)
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
