package spec

import (
	"strings"
	"testing"
)

func TestParseRestart(t *testing.T) {
	for in, want := range map[string]RestartPolicy{
		"":             {Mode: RestartNo},
		"no":           {Mode: RestartNo},
		"always":       {Mode: RestartAlways},
		"on-failure":   {Mode: RestartOnFailure},
		"On-Failure:3": {Mode: RestartOnFailure, Max: 3},
	} {
		got, err := ParseRestart(in)
		if err != nil || got != want {
			t.Errorf("ParseRestart(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"sometimes", "always:3", "on-failure:0", "on-failure:x", "on-failure:-1"} {
		if _, err := ParseRestart(bad); err == nil || !strings.HasPrefix(err.Error(), "restart: ") {
			t.Errorf("ParseRestart(%q) = %v; want a restart error", bad, err)
		}
	}
}

func TestRestartPolicyDecides(t *testing.T) {
	cases := []struct {
		p              RestartPolicy
		code, restarts int
		want           bool
	}{
		{RestartPolicy{Mode: RestartNo}, 1, 0, false},
		{RestartPolicy{Mode: RestartAlways}, 0, 100, true},
		{RestartPolicy{Mode: RestartOnFailure}, 0, 0, false},
		{RestartPolicy{Mode: RestartOnFailure}, 5, 1000, true},
		{RestartPolicy{Mode: RestartOnFailure, Max: 2}, 5, 1, true},
		{RestartPolicy{Mode: RestartOnFailure, Max: 2}, 5, 2, false},
	}
	for _, c := range cases {
		if got := c.p.Restarts(c.code, c.restarts); got != c.want {
			t.Errorf("%+v.Restarts(%d, %d) = %v, want %v", c.p, c.code, c.restarts, got, c.want)
		}
	}
}

func TestBuildOptions(t *testing.T) {
	s, err := Build(Input{
		Image: "example/pg:1", Restart: "on-failure:5",
		Volumes:    map[string]string{"pgdata": "/var/lib/postgresql/data"},
		Entrypoint: []string{"/bin/sh", "-c"}, Workdir: "/srv/", User: "1000:1000",
	})
	if err != nil {
		t.Fatal(err)
	}
	if s.Restart != "on-failure:5" || s.Volumes["pgdata"] != "/var/lib/postgresql/data" || s.Workdir != "/srv" || s.User != "1000:1000" || len(s.Entrypoint) != 2 {
		t.Fatalf("Build kept %+v", s)
	}
	if err := s.Check(); err != nil {
		t.Fatalf("a built spec fails Check: %v", err)
	}
	for _, bad := range []Input{
		{Image: "a", Volumes: map[string]string{"Bad Name": "/data"}},
		{Image: "a", Volumes: map[string]string{"v": "data"}},
		{Image: "a", Volumes: map[string]string{"v": "/"}},
		{Image: "a", Volumes: map[string]string{"v": "/a/../b"}},
		{Image: "a", Volumes: map[string]string{"v": "/d", "w": "/d"}},
		{Image: "a", Workdir: "relative"},
		{Image: "a", User: "root; rm -rf"},
		{Image: "a", Restart: "never"},
	} {
		if _, err := Build(bad); err == nil {
			t.Errorf("Build(%+v) accepted it", bad)
		}
	}
}

func TestDecodeSpawnJSONOptions(t *testing.T) {
	req, err := DecodeSpawnJSON(strings.NewReader(`{"image_ref":"a","restart":"always","volumes":{"data":"/data"},"workdir":"/w","user":"app","entrypoint":["/x"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if s := req.Spec; s.Restart != "always" || s.Volumes["data"] != "/data" || s.Workdir != "/w" || s.User != "app" || s.Entrypoint[0] != "/x" {
		t.Fatalf("decoded %+v", s)
	}
	if _, err := ParseHAC([]byte("[hardware]\nref = \"a\"\nrestart = \"on-failure\"\n[hardware.volumes]\ndata = \"/data\"\n")); err != nil {
		t.Fatalf("hac.toml with restart and volumes: %v", err)
	}
}
