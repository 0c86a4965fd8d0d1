package volume

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

func needRoot(t *testing.T) {
	t.Helper()
	skip := t.Skip
	if os.Getenv("CI") == "true" {
		skip = t.Fatal
	}
	if os.Geteuid() != 0 {
		skip("volumes need root (loop mounts)")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		skip("mkfs.ext4 is not installed (make deps)")
	}
}

// TestVolumeKeepsDataAndItsSize makes a 16 MiB volume, writes to it,
// checks a write past its size fails with ENOSPC, and that the data
// survives an unmount (a node restart) and a new mount.
func TestVolumeKeepsDataAndItsSize(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	m, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Remove(ctx, "pgdata") })
	if err := m.Create(ctx, "pgdata", 16); err != nil {
		t.Fatal(err)
	}
	data, err := m.Mount(ctx, "pgdata")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := m.Mount(ctx, "pgdata"); err != nil || again != data {
		t.Fatalf("second mount: %q %v, want %q", again, err, data)
	}
	if entries, _ := os.ReadDir(data); len(entries) != 0 {
		t.Fatalf("a new volume's data directory holds %v, want nothing (no lost+found)", entries)
	}
	if err := os.WriteFile(filepath.Join(data, "PG_VERSION"), []byte("16\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := make([]byte, 32<<20)
	err = os.WriteFile(filepath.Join(data, "big"), big, 0o600)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 32 MiB to a 16 MiB volume: %v, want ENOSPC", err)
	}
	os.Remove(filepath.Join(data, "big"))

	if err := m.Unmount(ctx, "pgdata"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); err == nil {
		t.Fatal("the file is still there after unmount: it was not on the volume")
	}
	// Create again (a retried create) keeps the data.
	if err := m.Create(ctx, "pgdata", 16); err != nil {
		t.Fatal(err)
	}
	if data, err = m.Mount(ctx, "pgdata"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(data, "PG_VERSION")); err != nil || string(b) != "16\n" {
		t.Fatalf("after a new mount: %q %v, want the file written before", b, err)
	}
	if names, err := m.List(); err != nil || len(names) != 1 || names[0] != "pgdata" {
		t.Fatalf("List: %v %v", names, err)
	}
	if err := m.Remove(ctx, "pgdata"); err != nil {
		t.Fatal(err)
	}
	if m.Exists("pgdata") {
		t.Fatal("the volume exists after Remove")
	}
	if _, err := m.Mount(ctx, "pgdata"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("mount of a removed volume: %v, want ErrNotFound", err)
	}
}
