package qemu

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecretEnvReachesGuestOnly boots a VM with a secret in its
// environment: the guest's main process has it, and no file under the
// driver's state dir holds it.
func TestSecretEnvReachesGuestOnly(t *testing.T) {
	d := newTestDriver(t)
	const value = "vm-s3cr3t-41d2"
	cfg := testConfig(testRootfs(t), "sh", "-c", "exec sleep 1000")
	cfg.SecretEnv = []string{"API_KEY=" + value}
	boot(t, d, cfg)

	// PID 1 in the guest is the agent; the workload is its child.
	out, _, _ := execOut(t, d, cfg.ID, "", "sh", "-c", "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null; done")
	if !strings.Contains(out, "API_KEY="+value) {
		t.Errorf("no process in the guest has the secret in its environment")
	}
	filepath.WalkDir(d.opts.StateDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil
		}
		if filepath.Base(filepath.Dir(path)) == "initramfs" {
			return nil // holds the agent, which is this test binary, literal included
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(value)) {
			t.Errorf("%s holds the secret value", path)
		}
		return nil
	})
	if err := d.Delete(testCtx(t), cfg.ID); err != nil {
		t.Fatal(err)
	}
}
