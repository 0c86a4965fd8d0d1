package driver

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestResolveUser(t *testing.T) {
	rootfs := t.TempDir()
	writeFile(t, filepath.Join(rootfs, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:App:/home/app:/bin/sh\n")
	writeFile(t, filepath.Join(rootfs, "etc/group"), "root:x:0:\napp:x:1001:\nstaff:x:50:app,other\nwww:x:33:app\n")
	cases := []struct {
		user      string
		uid, gid  uint32
		groups    []uint32
		home      string
		wantError string
	}{
		{"", 0, 0, nil, "/root", ""},
		{"root", 0, 0, nil, "/root", ""},
		{"app", 1000, 1001, []uint32{50, 33}, "/home/app", ""},
		{"1000", 1000, 1001, []uint32{50, 33}, "/home/app", ""},
		{"app:staff", 1000, 50, []uint32{33}, "/home/app", ""},
		{"app:7", 1000, 7, []uint32{50, 33}, "/home/app", ""},
		{"4242", 4242, 0, nil, "/", ""},
		{"4242:4243", 4242, 4243, nil, "/", ""},
		{"ghost", 0, 0, nil, "", "not in the image's /etc/passwd"},
		{"app:ghosts", 0, 0, nil, "", "not in the image's /etc/group"},
	}
	for _, c := range cases {
		u, err := ResolveUser(rootfs, c.user)
		if c.wantError != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantError) {
				t.Errorf("user %q: error %v, want %q", c.user, err, c.wantError)
			}
			continue
		}
		if err != nil {
			t.Errorf("user %q: %v", c.user, err)
			continue
		}
		if u.UID != c.uid || u.GID != c.gid || !slices.Equal(u.Groups, c.groups) || u.Home != c.home {
			t.Errorf("user %q = %+v, want uid %d gid %d groups %v home %s", c.user, u, c.uid, c.gid, c.groups, c.home)
		}
	}
}

// TestResolveUserStaysInRootfs plants symlinks that a naive lookup would
// follow out of the rootfs.
func TestResolveUserStaysInRootfs(t *testing.T) {
	link := func(t *testing.T, target string) string {
		rootfs := t.TempDir()
		if err := os.Mkdir(filepath.Join(rootfs, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(rootfs, "etc/passwd")); err != nil {
			t.Fatal(err)
		}
		return rootfs
	}

	// An absolute symlink means the image's own file.
	rootfs := link(t, "/etc/real-passwd")
	writeFile(t, filepath.Join(rootfs, "etc/real-passwd"), "alice:x:1234:1234::/home/alice:/bin/sh\n")
	if u, err := ResolveUser(rootfs, "alice"); err != nil || u.UID != 1234 {
		t.Errorf("alice = %+v, %v; want uid 1234 from the image's /etc/real-passwd", u, err)
	}

	// Followed naively this reaches the host's /etc/passwd; inside the
	// rootfs ".." stops at its root and the link points at itself.
	host, err := os.ReadFile("/etc/passwd")
	if err != nil || !strings.Contains(string(host), "\ndaemon:") {
		t.Skip("the host's /etc/passwd has no daemon user to tell it apart")
	}
	rootfs = link(t, strings.Repeat("../", 20)+"etc/passwd")
	if u, err := ResolveUser(rootfs, "daemon"); err == nil {
		t.Errorf("resolved the host's daemon user through a symlink: %+v", u)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
