package image

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// ext4Locks serialises the making of one image's disk, so two microVMs of
// a new image spawned at once wait for one mkfs instead of racing two, and
// its removal.
var ext4Locks sync.Map // path → *sync.Mutex

// Ext4 returns a read-only ext4 disk image of the unpacked rootfs at
// rootfs (an Image's Rootfs), for microVMs: made once per image digest
// with `mkfs.ext4 -d`, then shared by every VM of the image, which mounts
// it read-only under a writable overlay of its own.
//
// The disk sits beside the rootfs, in the store's ext4/ directory, named
// by the same manifest digest. It appears there by rename once complete,
// so a crash never leaves a truncated disk under the final name.
func Ext4(ctx context.Context, rootfs string) (string, error) {
	rootfs = filepath.Clean(rootfs)
	if filepath.Base(filepath.Dir(rootfs)) != "rootfs" {
		return "", fmt.Errorf("make ext4 disk: %s is not an image store's rootfs directory", rootfs)
	}
	out, tmp := ext4Paths(rootfs)
	dir := filepath.Dir(out)
	mu := ext4Lock(out)
	mu.Lock()
	defer mu.Unlock()
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create ext4 disk dir %s: %w", dir, err)
	}
	bytesUsed, inodes, err := treeSize(rootfs)
	if err != nil {
		return "", fmt.Errorf("size rootfs %s: %w", rootfs, err)
	}
	// Room for ext4's own metadata (inode tables, bitmaps, directories):
	// a quarter more than the data plus a fixed 16 MiB floor.
	size := bytesUsed + bytesUsed/4 + 16<<20
	size = (size + 4095) &^ 4095
	_ = os.Remove(tmp)
	defer os.Remove(tmp)
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		return "", fmt.Errorf("create ext4 disk %s: %w", tmp, err)
	}
	if err := os.Truncate(tmp, size); err != nil {
		return "", fmt.Errorf("size ext4 disk %s: %w", tmp, err)
	}
	// No journal: the disk is only ever mounted read-only. No reserved
	// blocks either, and enough inodes for every file plus slack.
	cmd := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0",
		"-N", strconv.FormatInt(inodes+256, 10), "-O", "^has_journal", "-L", "hypercore-root",
		"-d", rootfs, tmp)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("mkfs.ext4 -d %s (is e2fsprogs 1.43 or newer installed?): %w: %s", rootfs, err, bytes.TrimSpace(stderr.Bytes()))
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", fmt.Errorf("move ext4 disk into place: %w", err)
	}
	return out, nil
}

// RemoveExt4 deletes the disk Ext4 made for rootfs, if any, and what a
// crash left of one half made. The store calls it when it removes the
// image. It waits for an Ext4 of the same rootfs to finish, so that one
// never renames a disk into place just after it was removed. A microVM
// still running from the disk keeps it: the file goes once QEMU closes it.
func RemoveExt4(rootfs string) error {
	out, tmp := ext4Paths(rootfs)
	mu := ext4Lock(out)
	mu.Lock()
	defer mu.Unlock()
	for _, p := range []string{out, tmp} {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("remove ext4 disk %s: %w", p, err)
		}
	}
	return nil
}

// ext4Paths returns where Ext4 puts the disk of rootfs, in the store's
// ext4/ dir beside rootfs/, and the name it makes it under.
func ext4Paths(rootfs string) (disk, tmp string) {
	rootfs = filepath.Clean(rootfs)
	dir := filepath.Join(filepath.Dir(filepath.Dir(rootfs)), "ext4")
	name := filepath.Base(rootfs) + ".ext4"
	return filepath.Join(dir, name), filepath.Join(dir, "."+name+".tmp")
}

// ext4Digest returns the manifest digest hex of a file in the ext4/ dir,
// a disk or one being made, as ext4Paths names them; ok is false for any
// other name.
func ext4Digest(name string) (hex string, ok bool) {
	if tmp, isTmp := strings.CutPrefix(name, "."); isTmp {
		if name, ok = strings.CutSuffix(tmp, ".tmp"); !ok {
			return "", false
		}
	}
	hex, ok = strings.CutSuffix(name, ".ext4")
	if !ok {
		return "", false
	}
	if _, err := v1.NewHash("sha256:" + hex); err != nil {
		return "", false
	}
	return hex, true
}

// ext4Lock returns the lock Ext4 holds while it makes the disk at path.
func ext4Lock(path string) *sync.Mutex {
	mu, _ := ext4Locks.LoadOrStore(path, &sync.Mutex{})
	return mu.(*sync.Mutex)
}

// treeSize sums the space of the files under root, rounded to 4 KiB blocks,
// and counts its entries.
func treeSize(root string) (int64, int64, error) {
	var size, n int64
	err := filepath.WalkDir(root, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n++
		info, err := d.Info()
		if err != nil {
			return err
		}
		size += (info.Size() + 4095) &^ 4095
		if d.IsDir() {
			size += 4096
		}
		return nil
	})
	return size, n, err
}
