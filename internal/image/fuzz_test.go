package image

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// tarOf builds a tar stream of the given headers, each regular file with
// its body.
func tarOf(entries ...tar.Header) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range entries {
		body := []byte(nil)
		if h.Typeflag == tar.TypeReg {
			body = []byte("data:" + h.Name)
			h.Size = int64(len(body))
		}
		tw.WriteHeader(&h)
		tw.Write(body)
	}
	tw.Close()
	return b.Bytes()
}

// FuzzExtract unpacks arbitrary tar streams into a fresh directory beside
// a sentinel file: whatever the names, links and symlinks, nothing may be
// written, linked or changed outside the directory.
func FuzzExtract(f *testing.F) {
	f.Add(tarOf(tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755}, tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(tar.Header{Name: "../outside", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(tar.Header{Name: "/../../outside", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: ".."}, tar.Header{Name: "up/outside", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(tar.Header{Name: "abs", Typeflag: tar.TypeSymlink, Linkname: "/"}, tar.Header{Name: "abs/tmp/x", Typeflag: tar.TypeReg, Mode: 0o644}))
	f.Add(tarOf(tar.Header{Name: "hl", Typeflag: tar.TypeLink, Linkname: "../outside"}))
	f.Add(tarOf(tar.Header{Name: "a", Typeflag: tar.TypeSymlink, Linkname: "../outside"}, tar.Header{Name: "b", Typeflag: tar.TypeLink, Linkname: "a"}))
	f.Add(tarOf(tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8}))
	f.Add([]byte("not a tar"))
	f.Fuzz(func(t *testing.T, data []byte) {
		base := t.TempDir()
		root := filepath.Join(base, "root")
		outside := filepath.Join(base, "outside")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(outside, []byte("sentinel"), 0o600); err != nil {
			t.Fatal(err)
		}
		_ = extract(context.Background(), bytes.NewReader(data), root, newBudget(64<<20, "--max-image-size", 0, ""))
		entries, err := os.ReadDir(base)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Name() != "root" && e.Name() != "outside" {
				t.Fatalf("extract wrote %s outside its directory", e.Name())
			}
		}
		b, err := os.ReadFile(outside)
		if err != nil || string(b) != "sentinel" {
			t.Fatalf("the file beside the directory changed: %q %v", b, err)
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(outside, &st); err != nil || st.Nlink != 1 {
			t.Fatalf("the file beside the directory got a hard link (nlink %d): %v", st.Nlink, err)
		}
		if fi, err := os.Lstat(root); err != nil || !fi.IsDir() {
			t.Fatalf("the directory itself was replaced: %v", err)
		}
	})
}
