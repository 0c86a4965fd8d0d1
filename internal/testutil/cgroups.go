package testutil

import (
	"errors"
	"io/fs"
	"path/filepath"
	"testing"
)

// CgroupDirs lists the cgroup directories named name anywhere below
// hypercore/ in every cgroup hierarchy, v1 (/sys/fs/cgroup/<controller>/
// hypercore) and v2 (/sys/fs/cgroup/hypercore, or unified/hypercore on a
// hybrid host). Workload cgroups are named after the workload's id, so this
// tells what a workload left in the cgroup filesystems whatever its
// driver's cgroup parent.
func CgroupDirs(t testing.TB, name string) []string {
	t.Helper()
	roots, err := filepath.Glob("/sys/fs/cgroup/*/hypercore")
	if err != nil {
		t.Fatal(err)
	}
	roots = append(roots, "/sys/fs/cgroup/hypercore")
	var found []string
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // no such hierarchy, or another test's cgroup went meanwhile
			}
			if err != nil {
				return err
			}
			if e.IsDir() && e.Name() == name {
				found = append(found, path)
				return fs.SkipDir
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return found
}
