package diskimage

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/mountutil"
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
	if m, err := mountutil.IsMountpoint(mnt); err != nil || m {
		t.Fatalf("after Unmount: mounted %v, %v", m, err)
	}
	if err := Mount(img, mnt); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil || string(b) != "kept" {
		t.Errorf("after a remount: %q, %v", b, err)
	}
}

// TestUnmountIdleRefusesABusyDisk holds a file open on a mounted image:
// UnmountIdle fails and leaves it mounted (a lazy unmount would leave a
// hidden writer), then succeeds once the file is closed.
func TestUnmountIdleRefusesABusyDisk(t *testing.T) {
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
	if err := Create(context.Background(), img, MinSizeMiB); err != nil {
		t.Fatal(err)
	}
	if err := MountFlags(img, mnt, unix.MS_NOSUID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Unmount(mnt) })
	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); err != nil || sfs.Flags&unix.ST_NOSUID == 0 {
		t.Errorf("MountFlags with MS_NOSUID: flags %#x (%v), want nosuid", sfs.Flags, err)
	}
	f, err := os.Create(filepath.Join(mnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	if err := UnmountIdle(mnt); !errors.Is(err, unix.EBUSY) {
		t.Errorf("UnmountIdle with a file open: %v, want EBUSY", err)
	}
	if m, err := mountutil.IsMountpoint(mnt); err != nil || !m {
		t.Fatalf("after a refused UnmountIdle: mounted %v, %v; want still mounted", m, err)
	}
	f.Close()
	if err := UnmountIdle(mnt); err != nil {
		t.Fatal(err)
	}
	if m, err := mountutil.IsMountpoint(mnt); err != nil || m {
		t.Fatalf("after UnmountIdle: mounted %v, %v", m, err)
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

// TestSpare takes images of the spare's size and of another: each is a
// whole filesystem of its size, and a spare is ready again after a take.
func TestSpare(t *testing.T) {
	if os.Geteuid() != 0 && os.Getenv("CI") != "true" {
		t.Skip("mounting the images to check them needs root")
	}
	dir := t.TempDir()
	s, err := NewSpare(filepath.Join(dir, "spare"), 16)
	if err != nil {
		t.Fatal(err)
	}
	s.Wait()
	if _, err := os.Stat(s.path()); err != nil {
		t.Fatalf("no spare after NewSpare: %v", err)
	}
	for i, size := range []int64{16, 16, 32} {
		img := filepath.Join(dir, "img"+strconv.Itoa(i))
		if err := s.Take(context.Background(), img, size); err != nil {
			t.Fatal(err)
		}
		mnt := img + ".mnt"
		if err := os.Mkdir(mnt, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := Mount(img, mnt); err != nil {
			t.Fatal(err)
		}
		var st unix.Statfs_t
		err := unix.Statfs(mnt, &st)
		Unmount(mnt)
		if total := int64(st.Blocks) * st.Bsize; err != nil || total > size<<20 || total < size<<19 {
			t.Errorf("image %d: %d bytes (%v), want a %d MiB filesystem", i, total, err, size)
		}
		s.Wait()
		if _, err := os.Stat(s.path()); err != nil {
			t.Errorf("no spare after take %d: %v", i, err)
		}
	}
}

// TestMountWhileStillAlive mounts an image again while its filesystem,
// lazily unmounted, is still held open: the new mount is the same
// filesystem (one loop device), so a write through the old handle is seen
// through the new mount.
func TestMountWhileStillAlive(t *testing.T) {
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
	if err := Create(context.Background(), img, 16); err != nil {
		t.Fatal(err)
	}
	if err := Mount(img, mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Unmount(mnt) })
	held, err := os.Create(filepath.Join(mnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := Unmount(mnt); err != nil {
		t.Fatal(err)
	}
	if err := Mount(img, mnt); err != nil {
		t.Fatal(err)
	}
	if _, err := held.WriteString("through the old mount"); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "held")); err != nil || string(b) != "through the old mount" {
		t.Errorf("read through the new mount: %q, %v; want the same filesystem", b, err)
	}
}
