package runc

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
)

// TestSecretEnvNeverOnDisk runs a workload with a secret in its
// environment and in /run/secrets, and checks that its main process has
// it and the file holds it on a tmpfs, while no file under
// the state dir (bundle, runtime state, logs) holds it, and that the
// tmpfs copy the runtime read is gone once it is created.
func TestSecretEnvNeverOnDisk(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t, "runc")
	// A tmpfs of the test's own, which it unmounts, rather than one the
	// driver would leave mounted on the host's /run.
	SealedRunDir = filepath.Join(t.TempDir(), "sealed")
	t.Cleanup(func() { unix.Unmount(SealedRunDir, unix.MNT_DETACH) })
	const value = "s3cr3t-value-7f1c2a"
	cfg := testConfig(testRootfs(t), "sh", "-c", "echo started; sleep 1000")
	cfg.SecretEnv = []string{"DB_PASSWORD=" + value}
	cfg.SecretFiles = map[string][]byte{"db-password": []byte(value)}
	drivertest.Run(t, testCtx(t), d, cfg)

	st, err := d.Status(testCtx(t), cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The runtime's start returns once it told its init to go on; the
	// init then execs the workload's process, with its environment.
	var environ []byte
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		environ, err = os.ReadFile(filepath.Join("/proc", strconv.Itoa(st.Pid), "environ"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(environ, []byte("_LIBCONTAINER_")) || time.Now().After(deadline) {
			break
		}
	}
	if !bytes.Contains(environ, []byte("DB_PASSWORD="+value)) {
		t.Errorf("main process environment %q lacks the secret", environ)
	}
	// An exec given the secret (as the node gives it) sees it too.
	out, code := drivertest.Exec(t, testCtx(t), d, cfg.ID, "sh", "-c", "cat /proc/1/environ | tr '\\0' '\\n'")
	if code != 0 || !strings.Contains(out, "DB_PASSWORD="+value) {
		t.Errorf("pid 1's environment seen from inside: %q (exit %d), want the secret", out, code)
	}
	// And as a file on a tmpfs.
	out, code = drivertest.Exec(t, testCtx(t), d, cfg.ID, "sh", "-c", "cat /run/secrets/db-password; echo; stat -c %a /run/secrets/db-password; grep ' /run/secrets ' /proc/mounts")
	if code != 0 || !strings.HasPrefix(out, value+"\n400\n") || !strings.Contains(out, "tmpfs") {
		t.Errorf("/run/secrets/db-password: %q (exit %d), want the value, mode 400, on a tmpfs", out, code)
	}
	filepath.WalkDir(d.opts.StateDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil && bytes.Contains(b, []byte(value)) {
			t.Errorf("%s holds the secret value", path)
		}
		return nil
	})
	var fs unix.Statfs_t
	if err := unix.Statfs(SealedRunDir, &fs); err != nil || fs.Type != unix.TMPFS_MAGIC {
		t.Errorf("%s is not a tmpfs: %v", SealedRunDir, err)
	}
	if left, _ := filepath.Glob(filepath.Join(SealedRunDir, "*", cfg.ID.String())); len(left) > 0 {
		t.Errorf("the tmpfs bundle stayed after create: %v", left)
	}
	if err := d.Delete(testCtx(t), cfg.ID); err != nil {
		t.Errorf("delete: %v", err)
	}
}
