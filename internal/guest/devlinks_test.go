package guest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDevLinks checks the links runc's default /dev has and devtmpfs
// lacks, replacing what was there (devtmpfs has its own ptmx node).
func TestDevLinks(t *testing.T) {
	dev := t.TempDir()
	if err := os.WriteFile(filepath.Join(dev, "ptmx"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := devLinks(dev); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1",
		"stderr": "/proc/self/fd/2", "ptmx": "pts/ptmx",
	} {
		if got, err := os.Readlink(filepath.Join(dev, name)); err != nil || got != want {
			t.Errorf("/dev/%s -> %q (%v), want %q", name, got, err, want)
		}
	}
}
