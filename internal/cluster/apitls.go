package cluster

import (
	"crypto/tls"
	"net"
	"path/filepath"
	"slices"

	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
)

// apiIPs adds to ips the addresses a client may reach this node's API at,
// so that the node certificate, which the API serves over TLS, verifies
// for them: loopback (the CLI on the node) and the API's bind address when
// it names one.
func apiIPs(ips []net.IP, apiAddr string) []net.IP {
	add := func(ip net.IP) {
		if ip == nil || ip.IsUnspecified() || ip.IsMulticast() {
			return
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		if !slices.ContainsFunc(ips, ip.Equal) {
			ips = append(ips, ip)
		}
	}
	if host, _, err := net.SplitHostPort(apiAddr); err == nil {
		add(net.ParseIP(host))
	}
	add(net.IPv4(127, 0, 0, 1))
	add(net.IPv6loopback)
	return ips
}

// apiDNSNames are the DNS names, besides its own, that the certificate of
// a node holding the CA names for its API: "localhost", as a local client
// may call it. A joining node's certificate names the node alone (the
// join policy issues no other names); loopback IPs cover it there.
func apiDNSNames(nodeName string) []string {
	if nodeName == "localhost" {
		return nil
	}
	return []string{"localhost"}
}

// APICertificate is the node's certificate and key, from the cluster CA,
// which the API serves TLS with unless it is given one of its own.
func (id *Identity) APICertificate() tls.Certificate { return id.mat.Cert }

// CACertFile is where a node keeps the cluster CA's certificate (PEM) under
// its data dir: what a client of its API trusts.
func CACertFile(dataDir string) string {
	return filepath.Join(dataDir, "cluster", "pki", pki.CACertFile)
}
