package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
)

// Identity is who this node is in the cluster: its name, the address its
// peers reach it at, and its certificates. It is settled before the node
// starts, because the name is part of every workload record and cgroup.
type Identity struct {
	// Name is the node's name in the cluster, the one its certificate
	// holds.
	Name string
	// AdvertiseIP is the address its peers reach it at.
	AdvertiseIP string
	mat         *pki.Material
	auth        *pki.Authority // only on the node that made the CA
}

// Identify loads this node's certificates, makes the cluster's trust root
// on the first start of the first node, or joins with the token.
//
// The name is cfg.NodeName; else the one in this node's certificate (so a
// restart without --node-name keeps it); else the hostname. Nodes that
// share a hostname (several network namespaces on one machine) would
// collide, so a join refused for a taken default name is retried once as
// <hostname>-<address>.
func Identify(ctx context.Context, cfg Config) (*Identity, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	bindIP, err := bindHost(cfg.BindAddr)
	if err != nil {
		return nil, err
	}
	id := &Identity{AdvertiseIP: cfg.AdvertiseIP}
	if id.AdvertiseIP == "" {
		if id.AdvertiseIP, err = pickAdvertiseIP(bindIP, cfg.Bridge); err != nil {
			return nil, err
		}
	}
	ips := apiIPs([]net.IP{net.ParseIP(id.AdvertiseIP)}, cfg.APIAddr)
	dir := filepath.Join(cfg.DataDir, "cluster", "pki")
	hasCAKey := fileExists(filepath.Join(dir, pki.CAKeyFile))
	hasNode := fileExists(filepath.Join(dir, pki.NodeCertFile))

	if hasNode {
		m, err := pki.Load(dir)
		if err != nil {
			return nil, err
		}
		if cfg.NodeName != "" && m.NodeName != cfg.NodeName {
			return nil, fmt.Errorf("cluster: %s holds the certificate of node %q, not %q: start with --node-name %s, or use another --data-dir", dir, m.NodeName, cfg.NodeName, m.NodeName)
		}
		id.Name = m.NodeName
	}
	named := cfg.NodeName != ""
	if id.Name == "" {
		id.Name = cfg.NodeName
	}
	if id.Name == "" {
		if id.Name, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("cluster: no --node-name and no hostname: %w", err)
		}
	}

	switch {
	case hasCAKey || (len(cfg.Joins) == 0 && !hasNode):
		a, err := pki.Bootstrap(dir)
		if err != nil {
			return nil, err
		}
		m, err := a.EnsureNode(id.Name, ips, apiDNSNames(id.Name))
		if err != nil {
			return nil, err
		}
		id.auth, id.mat = a, m
	case hasNode:
		if id.mat, err = pki.Load(dir); err != nil {
			return nil, err
		}
	default:
		if cfg.JoinToken == "" {
			return nil, errors.New("cluster: joining needs a join token: pass --join-token or set HYPERCORE_JOIN_TOKEN to the contents of " + JoinTokenFile + " in the first node's data dir")
		}
		tok, err := pki.ParseJoinToken(cfg.JoinToken)
		if err != nil {
			return nil, fmt.Errorf("cluster: --join-token: %w", err)
		}
		join := func(name string) (*pki.Material, error) {
			jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return pki.Join(jctx, tok, name, ips, dir)
		}
		m, err := join(id.Name)
		var je *pki.JoinError
		if err != nil && !named && errors.As(err, &je) && je.Status == http.StatusConflict {
			alt := id.Name + "-" + strings.NewReplacer(".", "-", ":", "-").Replace(id.AdvertiseIP)
			cfg.Log.Warn("the hostname is taken in the cluster; joining under another name (set --node-name to choose)", "taken", id.Name, "name", alt)
			id.Name = alt
			m, err = join(alt)
		}
		if err != nil {
			return nil, fmt.Errorf("cluster: join with the token: %w", err)
		}
		id.mat = m
	}
	return id, nil
}
