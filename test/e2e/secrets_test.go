package e2e

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecrets walks the sealed-secrets contract: a secret set from stdin
// reaches the workload's environment (seen by `hypercore exec ... env`)
// and /run/secrets,
// while no file under the data dir, the daemon's log, the workload's API
// answers or `secret list` hold its value.
func TestSecrets(t *testing.T) {
	n, ref := newNode(t)
	const value = "pw-5c0e1d9b7a-top-secret"

	set := n.NS.Command(n.Bin, "--data-dir", n.DataDir, "secret", "set", "db-password")
	set.Stdin = strings.NewReader(value)
	if out, err := set.CombinedOutput(); err != nil {
		t.Fatalf("secret set: %v %s", err, out)
	}
	if out, err := n.CLI("secret", "list"); err != nil || !strings.Contains(out, "db-password") || strings.Contains(out, value) {
		t.Fatalf("secret list: %v %q, want the name and not the value", err, out)
	}
	// A spawn naming a secret that is not set is refused before anything
	// is placed.
	if code, out := n.API("POST", "/spawn", `{"image_ref":"`+ref+`","secrets":{"X":"nope"}}`); code != 400 || !strings.Contains(out, "secrets") {
		t.Fatalf("spawn with an unknown secret: %d %s, want 400 naming secrets", code, out)
	}

	out, err := n.CLI("spawn", "-q", "--secret", "DB_PASSWORD=db-password", "--ports", "80:8080", ref)
	if err != nil {
		t.Fatalf("spawn --secret: %v %s", err, out)
	}
	id := strings.TrimSpace(out[strings.LastIndexByte(strings.TrimSpace(out), '\n')+1:])
	env, err := n.CLI("exec", id, "--", "env")
	if err != nil || !strings.Contains(env, "DB_PASSWORD="+value) {
		t.Fatalf("exec env: %v %q, want DB_PASSWORD set to the secret", err, env)
	}
	// And as a file on a tmpfs, named after the secret.
	if f, err := n.CLI("exec", id, "--", "cat", "/run/secrets/db-password"); err != nil || f != value {
		t.Fatalf("/run/secrets/db-password: %v %q, want the value", err, f)
	}
	// The main process has it too.
	if pid1, err := n.CLI("exec", id, "--", "cat", "/proc/1/environ"); err != nil || !strings.Contains(pid1, "DB_PASSWORD="+value) {
		t.Fatalf("main process environment: %v %q", err, pid1)
	}
	for _, path := range []string{"/v1/workloads/" + id, "/v1/workloads", "/list", "/v1/secrets"} {
		if code, body := n.API("GET", path, ""); code != 200 || strings.Contains(body, value) {
			t.Errorf("GET %s: %d, holds the value: %v", path, code, strings.Contains(body, value))
		}
	}
	if out, err := n.CLI("inspect", id); err != nil || strings.Contains(out, value) || !strings.Contains(out, "db-password") {
		t.Errorf("inspect: %v, holds the value: %v; want the secret's name only:\n%s", err, strings.Contains(out, value), out)
	}

	// Nothing under the data dir holds the value: not state.db, not the
	// raft log or snapshots, not the bundle or the runtime's state.
	var scanned int
	filepath.WalkDir(n.DataDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.IsDir() && e.Name() == "rootfs" {
			return fs.SkipDir // the workload's own view of its filesystem, /proc included
		}
		if !e.Type().IsRegular() {
			return nil
		}
		scanned++
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(value)) {
			t.Errorf("%s holds the secret's value", path)
		}
		return nil
	})
	if scanned < 10 {
		t.Fatalf("scanned only %d files under %s", scanned, n.DataDir)
	}
	if strings.Contains(n.Log(), value) {
		t.Error("the daemon's log holds the secret's value")
	}

	if out, err := n.CLI("secret", "rm", "db-password"); err != nil {
		t.Fatalf("secret rm: %v %s", err, out)
	}
	if out, _ := n.CLI("secret", "list"); strings.Contains(out, "db-password") {
		t.Errorf("secret list after rm: %q", out)
	}
}
