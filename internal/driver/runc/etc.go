package runc

import (
	"fmt"
	"os"
	"regexp"
)

// writeEtcFiles writes the files bind-mounted over the image's /etc/hosts,
// /etc/hostname and /etc/resolv.conf, so each workload gets its own without
// writing to the image.
func writeEtcFiles(p paths, hostname, ip string) error {
	addr := ip
	if addr == "" {
		addr = "127.0.1.1"
	}
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", addr, hostname)
	files := map[string]string{
		p.hosts:    hosts,
		p.hostname: hostname + "\n",
		p.resolv:   hostResolvConf(),
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

var loopbackNameserver = regexp.MustCompile(`(?m)^\s*nameserver\s+(127\.|::1\b)`)

// hostResolvConf is the host's resolver config. A loopback nameserver (a
// local stub such as systemd-resolved) is unreachable from the workload's
// netns, so then the stub's upstream list is used if there is one.
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
