package rootless

import (
	"strings"
	"testing"
)

func TestIDMaps(t *testing.T) {
	cases := []struct {
		name     string
		text     string
		rootless bool
		contig   uint64
		hostUID  uint64
	}{
		{"host", "         0          0 4294967295\n", false, 4294967295, 0},
		{"map-root-user", "0 1000 1\n", true, 1, 1000},
		{"map-auto", "0 1000 1\n1 100000 65536\n", true, 65537, 1000},
		{"gap", "0 1000 1\n2 100000 65536\n", true, 1, 1000},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := ParseIDMap(strings.NewReader(c.text))
			if err != nil {
				t.Fatal(err)
			}
			if IsRootless(m) != c.rootless || ContiguousFromZero(m) != c.contig || HostUID(m) != c.hostUID {
				t.Errorf("rootless %v contiguous %d host uid %d; want %v %d %d", IsRootless(m), ContiguousFromZero(m), HostUID(m), c.rootless, c.contig, c.hostUID)
			}
		})
	}
	if _, err := ParseIDMap(strings.NewReader("0 1\n")); err == nil {
		t.Error("a two-field line was accepted")
	}
}

func TestDataDir(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	s := State{Rootless: true, HostUID: 1000}
	if got := DataDir("/var/lib/hypercore", s, env(map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000", "TMPDIR": "/scratch"})); got != "/run/user/1000/hypercore" {
		t.Errorf("with XDG_RUNTIME_DIR: %s", got)
	}
	if got := DataDir("/var/lib/hypercore", s, env(map[string]string{"TMPDIR": "/scratch"})); got != "/scratch/hypercore-1000" {
		t.Errorf("with TMPDIR: %s", got)
	}
	if got := DataDir("/var/lib/hypercore", s, env(nil)); got != "/tmp/hypercore-1000" {
		t.Errorf("with neither: %s", got)
	}
}
