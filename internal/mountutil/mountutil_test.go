package mountutil

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestStackedMounts mounts two tmpfs on one dir: IsMountpoint sees them,
// UnmountAll takes both down, and a dir or path without a mount is fine.
func TestStackedMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("mounts need root")
		}
		t.Skip("mounts need root")
	}
	dir := filepath.Join(t.TempDir(), "m")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if m, err := IsMountpoint(dir); err != nil || m {
		t.Fatalf("IsMountpoint of a plain dir: %v %v, want false", m, err)
	}
	if m, err := IsMountpoint(filepath.Join(dir, "missing")); err != nil || m {
		t.Fatalf("IsMountpoint of a missing path: %v %v, want false", m, err)
	}
	for range 2 {
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = UnmountAll(dir) })
	if m, err := IsMountpoint(dir); err != nil || !m {
		t.Fatalf("IsMountpoint of a tmpfs: %v %v, want true", m, err)
	}
	if err := UnmountAll(dir); err != nil {
		t.Fatal(err)
	}
	if m, err := IsMountpoint(dir); err != nil || m {
		t.Fatalf("after UnmountAll: mounted %v %v, want false", m, err)
	}
	if err := UnmountAll(filepath.Join(dir, "missing")); err != nil {
		t.Fatalf("UnmountAll of a missing path: %v", err)
	}
}
