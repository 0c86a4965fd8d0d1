package image

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// Ext4 makes a disk holding the rootfs's files, once: a second call
// returns the same disk without making it again.
func TestExt4(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (e2fsprogs; make deps)", tool)
		}
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs", strings.Repeat("cd", 32))
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.WriteRootfs(t, rootfs)

	disk, err := Ext4(context.Background(), rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(filepath.Dir(filepath.Dir(rootfs)), "ext4", filepath.Base(rootfs)+".ext4"); disk != want {
		t.Errorf("disk at %s, want %s", disk, want)
	}
	out, err := exec.Command("debugfs", "-R", "cat /www/index.html", disk).Output()
	if err != nil || string(out) != testutil.IndexHTML {
		t.Errorf("/www/index.html on the disk = %q (%v), want the rootfs's", out, err)
	}
	before, err := os.Stat(disk)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Ext4(context.Background(), rootfs)
	if err != nil || again != disk {
		t.Fatalf("second Ext4 = %s, %v", again, err)
	}
	after, _ := os.Stat(disk)
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Error("the second call made the disk again")
	}
	if err := RemoveExt4(rootfs); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(disk); !os.IsNotExist(err) {
		t.Errorf("disk still there after RemoveExt4: %v", err)
	}

	if _, err := Ext4(context.Background(), t.TempDir()); err == nil {
		t.Error("Ext4 of a dir outside an image store: want an error")
	}
}
