package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	old := syscall.Umask(0o077) // perm is applied as given, whatever the umask
	defer syscall.Umask(old)

	if err := WriteFile(path, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	check := func(want string, perm os.FileMode) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil || string(b) != want {
			t.Fatalf("content %q %v, want %q", b, err, want)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != perm {
			t.Fatalf("mode %v %v, want %v", fi.Mode().Perm(), err, perm)
		}
	}
	check("one", 0o644)

	// Replacing keeps no temp files behind and takes the new mode.
	if err := WriteFile(path, []byte("two"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("two", 0o600)
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("dir holds %v %v, want only f", entries, err)
	}

	// A directory that does not exist is an error, and path is untouched.
	if err := WriteFile(filepath.Join(dir, "no", "f"), []byte("x"), 0o600); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	// A failed rename (path is a non-empty directory) leaves no temp file.
	sub := filepath.Join(dir, "sub")
	if err := os.MkdirAll(filepath.Join(sub, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(sub, []byte("x"), 0o600); err == nil {
		t.Fatal("rename over a non-empty directory succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Fatalf("dir holds %v after a failed write, want f and sub", entries)
	}
	check("two", 0o600)
}
