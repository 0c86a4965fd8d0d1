package diskimage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFixedSize fills a mounted image: the writer gets ENOSPC, the file on
// the host takes no more than its size, and Unmount leaves nothing mounted
// and the data there for the next Mount.
func TestFixedSize(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("loop devices and mounts need root")
		}
		t.Skip("loop devices and mounts need root")
	}
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "disk.ext4"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	const sizeMiB = 16
	if err := Create(context.Background(), img, sizeMiB); err != nil {
		t.Fatal(err)
	}
	if err := Mount(img, mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Unmount(mnt) })
	if err := Mount(img, mnt); err != nil { // a second Mount is a no-op
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(mnt, "big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{1}, 1<<20)
	var werr error
	for range 2 * sizeMiB {
		if _, werr = f.Write(chunk); werr != nil {
			break
		}
	}
	f.Close()
	if !errors.Is(werr, unix.ENOSPC) {
		t.Errorf("writing %d MiB on a %d MiB disk: %v; want ENOSPC", 2*sizeMiB, sizeMiB, werr)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil || st.Blocks*512 > sizeMiB<<20 {
		t.Errorf("the image takes %d bytes on the host (%v), want at most %d", st.Blocks*512, err, sizeMiB<<20)
	}
	if err := os.WriteFile(filepath.Join(mnt, "big"), []byte("kept"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if m, err := IsMounted(mnt); err != nil || m {
		t.Fatalf("after Unmount: mounted %v, %v", m, err)
	}
	if err := Mount(img, mnt); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil || string(b) != "kept" {
		t.Errorf("after a remount: %q, %v", b, err)
	}
}

func TestCreateRefusesTinySize(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.ext4")
	if err := Create(context.Background(), img, MinSizeMiB-1); err == nil {
		t.Error("Create made a disk below MinSizeMiB")
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("a refused Create left %s: %v", img, err)
	}
}
