package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// TestWhiteouts checks that a file deleted by an upper layer (.wh.name) and
// a directory made opaque (.wh..wh..opq) are gone from the rootfs.
func TestWhiteouts(t *testing.T) {
	lower := layerOf(t,
		dirE("a/", 0o755), fileE("a/keep", "keep"), fileE("a/gone", "gone"),
		dirE("opq/", 0o755), fileE("opq/old", "old"), dirE("opq/sub/", 0o755), fileE("opq/sub/deep", "deep"),
		fileE("top", "top"),
		dirE("deldir/", 0o755), fileE("deldir/f", "f"),
	)
	upper := layerOf(t,
		fileE("a/.wh.gone", ""),
		fileE("opq/.wh..wh..opq", ""), fileE("opq/new", "new"),
		fileE(".wh.top", ""),
		fileE(".wh.deldir", ""),
		fileE("a/added", "added"),
	)
	host := testutil.Registry(t)
	testutil.Push(t, host+"/wh:1", imageOf(t, "/x", lower, upper))
	s := openStore(t)
	img, err := s.Pull(context.Background(), host+"/wh:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a", "a/added", "a/keep", "opq", "opq/new"}
	if got := tree(t, img.Rootfs); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("rootfs holds %v, want %v", got, want)
	}
}

// TestUnpackMetadata checks modes, setuid, owners, times, symlinks and hard
// links survive, and device nodes are skipped.
func TestUnpackMetadata(t *testing.T) {
	mtime := time.Unix(1600000000, 0)
	suid := fileE("bin/su", "su")
	suid.hdr.Mode = 0o4755
	owned := fileE("home/u/f", "f")
	owned.hdr.Uid, owned.hdr.Gid, owned.hdr.ModTime = 1234, 5678, mtime
	private := dirE("home/u/", 0o700)
	private.hdr.Uid, private.hdr.Gid, private.hdr.ModTime = 1234, 5678, mtime
	sticky := dirE("tmp/", 0o1777)
	dev := entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}
	fifo := entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o644}}
	layer := layerOf(t,
		dirE("bin/", 0o755), suid, dirE("home/", 0o755), private, owned, sticky,
		fileE("orig", "shared"), hardlinkE("hard", "orig"),
		symlinkE("abs", "/etc/passwd"), symlinkE("rel", "orig"),
		dirE("dev/", 0o755), dev, fifo,
	)
	host := testutil.Registry(t)
	testutil.Push(t, host+"/meta:1", imageOf(t, "/x", layer))
	s := openStore(t)
	img, err := s.Pull(context.Background(), host+"/meta:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	at := func(p string) string { return filepath.Join(img.Rootfs, p) }

	if fi, err := os.Stat(at("bin/su")); err != nil || fi.Mode()&(os.ModeSetuid|os.ModePerm) != os.ModeSetuid|0o755 {
		t.Errorf("bin/su mode: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(at("tmp")); err != nil || fi.Mode()&(os.ModeSticky|os.ModePerm) != os.ModeSticky|0o777 {
		t.Errorf("tmp mode: %v %v", fi.Mode(), err)
	}
	for _, p := range []string{"home/u", "home/u/f"} {
		fi, err := os.Stat(at(p))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if os.Geteuid() == 0 && (st.Uid != 1234 || st.Gid != 5678) {
			t.Errorf("%s owned by %d:%d, want 1234:5678", p, st.Uid, st.Gid)
		}
		if !fi.ModTime().Equal(mtime) {
			t.Errorf("%s mtime %v, want %v", p, fi.ModTime(), mtime)
		}
	}
	if fi, _ := os.Stat(at("home/u")); fi.Mode().Perm() != 0o700 {
		t.Errorf("home/u mode %v, want 0700", fi.Mode())
	}
	a, err1 := os.Stat(at("orig"))
	b, err2 := os.Stat(at("hard"))
	if err1 != nil || err2 != nil || !os.SameFile(a, b) {
		t.Errorf("hard is not a hard link of orig: %v %v", err1, err2)
	}
	if target, err := os.Readlink(at("abs")); err != nil || target != "/etc/passwd" {
		t.Errorf("abs -> %q, %v", target, err)
	}
	if target, err := os.Readlink(at("rel")); err != nil || target != "orig" {
		t.Errorf("rel -> %q, %v", target, err)
	}
	for _, p := range []string{"dev/null", "fifo"} {
		if _, err := os.Lstat(at(p)); !os.IsNotExist(err) {
			t.Errorf("%s exists (%v); device nodes and fifos must be skipped", p, err)
		}
	}
}

// TestMaliciousImage pushes hostile layers through a registry and checks
// nothing is written outside the rootfs.
func TestMaliciousImage(t *testing.T) {
	host := testutil.Registry(t)
	outside := t.TempDir()

	t.Run("dotdot", func(t *testing.T) {
		testutil.Push(t, host+"/evil:dotdot", imageOf(t, "/x", layerOf(t, fileE("ok", "ok"), fileE("../escape", "pwned"), fileE("../../escape", "pwned"))))
		s := openStore(t)
		_, err := s.Pull(context.Background(), host+"/evil:dotdot", nil)
		if err == nil || !strings.Contains(err.Error(), host+"/evil:dotdot") {
			t.Fatalf("Pull of a ../ layer: %v", err)
		}
		for _, p := range []string{filepath.Join(s.dir, "escape"), filepath.Join(s.dir, "rootfs", "escape"), filepath.Join(filepath.Dir(s.dir), "escape")} {
			if _, err := os.Lstat(p); !os.IsNotExist(err) {
				t.Errorf("%s was written", p)
			}
		}
		if rootfs := tree(t, filepath.Join(s.dir, "rootfs")); len(rootfs) != 0 {
			t.Errorf("rootfs/ holds %v after a failed unpack", rootfs)
		}
		if tmp := tree(t, s.tmpDir()); len(tmp) != 0 {
			t.Errorf("tmp/ holds %v after a failed unpack", tmp)
		}
		if list, _ := s.List(); len(list) != 0 {
			t.Errorf("indexed %v", list)
		}
	})

	t.Run("symlink", func(t *testing.T) {
		testutil.Push(t, host+"/evil:symlink", imageOf(t, "/x", layerOf(t, symlinkE("evil", outside), fileE("evil/pwned", "pwned"))))
		s := openStore(t)
		img, err := s.Pull(context.Background(), host+"/evil:symlink", nil)
		if err != nil {
			t.Fatal(err)
		}
		if left := tree(t, outside); len(left) != 0 {
			t.Errorf("written outside the rootfs: %v", left)
		}
		if target, err := os.Readlink(filepath.Join(img.Rootfs, "evil")); err != nil || target != outside {
			t.Errorf("evil -> %q, %v", target, err)
		}
	})
}

// TestExtractHostileTar feeds raw tars (not flattened by mutate.Extract,
// which already drops some of these) straight to the extractor.
func TestExtractHostileTar(t *testing.T) {
	cases := map[string]struct {
		entries []entry
		wantErr bool
		want    []string // rootfs contents when no error
	}{
		"dotdot":           {entries: []entry{fileE("../escape", "x")}, wantErr: true},
		"dotdot in middle": {entries: []entry{fileE("a/../../escape", "x")}, wantErr: true},
		"dotdot alone":     {entries: []entry{dirE("..", 0o755)}, wantErr: true},
		// Entries the extractor skips (it makes no devices or fifos) are
		// refused all the same when their names climb out: os.Root only
		// refuses what is written through it, so it would never see them.
		"fifo climbing out":   {entries: []entry{{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "../fifo", Mode: 0o644}}}, wantErr: true},
		"device climbing out": {entries: []entry{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "a/../../../dev/x", Mode: 0o644, Devmajor: 1, Devminor: 3}}}, wantErr: true},
		"fifo inside":         {entries: []entry{fileE("f", "x"), {hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "p", Mode: 0o644}}}, want: []string{"f"}},
		"absolute name":       {entries: []entry{fileE("/etc/passwd", "x")}, want: []string{"etc", "etc/passwd"}},
		"symlink then write through it": {
			entries: []entry{symlinkE("evil", "OUTSIDE"), fileE("evil/pwned", "x")},
			want:    []string{"evil"},
		},
		"symlink then dir through it": {
			entries: []entry{symlinkE("evil", "OUTSIDE"), dirE("evil/sub/", 0o755), fileE("evil/sub/pwned", "x")},
			want:    []string{"evil"},
		},
		"relative symlink up then write": {
			entries: []entry{symlinkE("up", "../../../.."), fileE("up/pwned", "x")},
			want:    []string{"up"},
		},
		"hard link to outside": {entries: []entry{hardlinkE("h", "../../../etc/passwd")}, wantErr: true},
		"hard link to symlink then write through": {
			entries: []entry{symlinkE("evil", "OUTSIDE"), hardlinkE("h", "evil"), fileE("h/pwned", "x")},
			want:    []string{"evil", "h"},
		},
		"hard link before its target": {
			entries: []entry{hardlinkE("h", "f"), fileE("f", "x")},
			want:    []string{"f", "h"},
		},
		"file replaced by dir": {
			entries: []entry{fileE("d", "x"), dirE("d/", 0o755), fileE("d/f", "y")},
			want:    []string{"d", "d/f"},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			outside := t.TempDir()
			parent := t.TempDir()
			dir := filepath.Join(parent, "a", "b", "rootfs")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			var entries []entry
			for _, e := range tc.entries {
				e.hdr.Linkname = strings.ReplaceAll(e.hdr.Linkname, "OUTSIDE", outside)
				entries = append(entries, e)
			}
			err := extract(context.Background(), bytes.NewReader(tarBytes(t, entries...)), dir, newBudget(1<<40, "", 0, ""))
			if tc.wantErr != (err != nil) {
				t.Fatalf("extract error = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "points outside the rootfs; the image is malformed or hostile") {
				t.Errorf("extract error = %v, want it to say the entry points outside the rootfs", err)
			}
			if left := tree(t, outside); len(left) != 0 {
				t.Errorf("written outside: %v", left)
			}
			if got := tree(t, parent); !strings.HasPrefix(strings.Join(got, ","), "a,a/b,a/b/rootfs") {
				t.Errorf("parent holds %v", got)
			} else {
				for _, p := range got {
					if !strings.HasPrefix(p, "a/b/rootfs") && p != "a" && p != "a/b" {
						t.Errorf("written outside the rootfs: %s", p)
					}
				}
			}
			if _, err := os.Lstat("/etc/passwd"); err != nil {
				t.Errorf("/etc/passwd: %v", err)
			}
			if !tc.wantErr {
				if got := tree(t, dir); strings.Join(got, ",") != strings.Join(tc.want, ",") {
					t.Errorf("rootfs holds %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestCompressionBomb pulls an image whose small gzip layer unpacks to more
// than the store's MaxImageSize: the pull fails with ErrTooLarge naming the
// setting, and nothing of the image stays in the store.
func TestCompressionBomb(t *testing.T) {
	host := testutil.Registry(t)
	const unpacked = 40 << 20
	bomb := layerOf(t, fileE("zeros", strings.Repeat("\x00", unpacked)))
	if size, err := bomb.Size(); err != nil || size > unpacked/100 {
		t.Fatalf("the bomb layer is %d bytes compressed (%v); want a small one", size, err)
	}
	testutil.Push(t, host+"/bomb:1", imageOf(t, "/x", bomb))
	s := openStoreWith(t, Options{MaxImageSize: 8 << 20, MaxImageSizeFlag: "--max-image-size"})
	_, err := s.Pull(context.Background(), host+"/bomb:1", nil)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "--max-image-size") || !strings.Contains(err.Error(), "8 MiB") {
		t.Fatalf("Pull of a 40 MiB bomb with an 8 MiB limit: %v; want ErrTooLarge naming --max-image-size and 8 MiB", err)
	}
	if got := treeUsage(s.dir) - treeUsage(filepath.Join(s.dir, "blobs")) - treeUsage(filepath.Join(s.dir, "index.db")); got > 1<<20 {
		t.Errorf("the store holds %d KiB besides blobs after a refused unpack", got>>10)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("indexed %v", list)
	}

	// The same image is fine under a limit it fits.
	big := openStoreWith(t, Options{MaxImageSize: 64 << 20})
	if _, err := big.Pull(context.Background(), host+"/bomb:1", nil); err != nil {
		t.Fatalf("Pull of a 40 MiB image with a 64 MiB limit: %v", err)
	}
}
