package driver

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// HostnameOf is cfg's Hostname or, as Docker does, the start of its id.
func HostnameOf(cfg Config) string {
	if cfg.Hostname != "" {
		return cfg.Hostname
	}
	h := strings.ReplaceAll(cfg.ID.String(), "-", "")
	return h[:min(12, len(h))]
}

// EtcFiles are a workload's own /etc/hosts, /etc/hostname and
// /etc/resolv.conf, keyed by those paths: every driver puts them over the
// image's, never writing to the image. ip may be empty (no network yet).
func EtcFiles(hostname, ip string) map[string]string {
	addr := ip
	if addr == "" {
		addr = "127.0.1.1"
	}
	return map[string]string{
		"/etc/hosts":       fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", addr, hostname),
		"/etc/hostname":    hostname + "\n",
		"/etc/resolv.conf": hostResolvConf(),
	}
}

var loopbackNameserver = regexp.MustCompile(`(?m)^\s*nameserver\s+(127\.|::1\b)`)

// hostResolvConf is the host's resolver config. A loopback nameserver (a
// local stub such as systemd-resolved) is unreachable from a workload's
// netns or a guest, so then the stub's upstream list is used if there is
// one.
func hostResolvConf() string {
	data, err := os.ReadFile("/etc/resolv.conf")
	if err != nil {
		return ""
	}
	if loopbackNameserver.Match(data) {
		if up, err := os.ReadFile("/run/systemd/resolve/resolv.conf"); err == nil {
			return string(up)
		}
	}
	return string(data)
}

var nameserverLine = regexp.MustCompile(`(?m)^\s*nameserver\s+(\S+)`)

// Nameservers are the addresses of the nameservers in the resolv.conf
// that workloads get, which their egress policy lets them query.
func Nameservers() []string {
	var out []string
	for _, m := range nameserverLine.FindAllStringSubmatch(hostResolvConf(), -1) {
		out = append(out, m[1])
	}
	return out
}
