package nodeid

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNamesAreMadeOnceAndPerDataDir(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	na, err := Load(a, "host")
	if err != nil {
		t.Fatal(err)
	}
	if len(na.Bridge) > 15 || !strings.HasPrefix(na.Bridge, "hcb") || na.Table != "hypercore-"+na.ID || na.CgroupParent != "/hypercore/"+na.ID {
		t.Errorf("names %+v do not follow the id", na)
	}
	again, err := Load(a, "other")
	if err != nil || again != na {
		t.Errorf("second Load = %+v, %v; want the kept %+v", again, err, na)
	}
	nb, err := Load(b, "host")
	if err != nil {
		t.Fatal(err)
	}
	if nb.ID == na.ID || nb.Bridge == na.Bridge || nb.Table == na.Table || nb.CgroupParent == na.CgroupParent {
		t.Errorf("two data dirs share names: %+v and %+v", na, nb)
	}
}

func TestDataDirFromBeforeIDsKeepsItsNames(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "state.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := Load(dir, "node-1")
	if err != nil {
		t.Fatal(err)
	}
	if n.Bridge != "hc0" || n.Table != "hypercore" || n.CgroupParent != "/hypercore/node-1" {
		t.Errorf("names of an older data dir = %+v, want hc0, hypercore, /hypercore/node-1", n)
	}
}

func TestDamagedFileIsRefused(t *testing.T) {
	for _, body := range []string{"", "{", `{"id":"0123456789abcdef","bridge":"hcb01234567","table":"t","cgroup_parent":"/hypercore/../etc"}`,
		`{"id":"0123456789abcdef","bridge":"a-bridge-name-too-long","table":"t","cgroup_parent":"/hypercore/x"}`} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, File), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir, "x"); err == nil || !strings.Contains(err.Error(), "damaged") {
			t.Errorf("Load of %q: %v, want it refused as damaged", body, err)
		}
	}
}
