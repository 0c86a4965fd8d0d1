package guest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// mountVolumes mounts each named volume's disk and binds its data
// directory at its target in the workload's root, as a container's
// volume is: the file system's lost+found stays outside.
func mountVolumes(vols []Volume) error {
	for _, v := range vols {
		dev, err := diskBySerial(v.Serial, 10*time.Second)
		if err != nil {
			return err
		}
		fs := filepath.Join("/run/volumes", v.Serial)
		if err := os.MkdirAll(fs, 0o700); err != nil {
			return err
		}
		if err := unix.Mount(dev, fs, "ext4", unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
			return fmt.Errorf("mount volume disk %s (%s): %w", dev, v.Serial, err)
		}
		data := filepath.Join(fs, "data")
		if err := os.Mkdir(data, 0o755); err == nil {
			// New, as the host makes it: writable by the workload's user.
			_ = os.Chmod(data, 0o1777)
		}
		dst := filepath.Join(newRoot, filepath.Clean("/"+v.Target))
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(data, dst, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind volume at %s: %w", v.Target, err)
		}
	}
	return nil
}

// diskBySerial finds the virtio-blk disk with serial, waiting for it to
// appear.
func diskBySerial(serial string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		entries, _ := os.ReadDir("/sys/block")
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "serial"))
			if err == nil && strings.TrimSpace(string(b)) == serial {
				dev := "/dev/" + e.Name()
				if _, err := os.Stat(dev); err == nil {
					return dev, nil
				}
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("volume disk with serial %s did not appear", serial)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
