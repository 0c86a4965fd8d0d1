package runc

import (
	"fmt"
	"os"

	"github.com/hypercore-dev/hypercore/internal/driver"
)

// writeEtcFiles writes the files bind-mounted over the image's /etc/hosts,
// /etc/hostname and /etc/resolv.conf, so each workload gets its own without
// writing to the image.
func writeEtcFiles(p paths, hostname, ip string) error {
	etc := driver.EtcFiles(hostname, ip)
	files := map[string]string{
		p.hosts:    etc["/etc/hosts"],
		p.hostname: etc["/etc/hostname"],
		p.resolv:   etc["/etc/resolv.conf"],
	}
	for path, content := range files {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}
