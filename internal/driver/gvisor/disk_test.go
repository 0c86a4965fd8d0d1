package gvisor

import (
	"strconv"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
)

// TestDiskLimit writes past a sandbox's disk: runsc writes through its
// gofer to the host overlay, whose upper dir is on the workload's ext4
// image, so the write fails with ENOSPC inside the sandbox.
func TestDiskLimit(t *testing.T) {
	t.Parallel()
	d := newTestDriver(t)
	cfg := testConfig(t, "sleep", "1000")
	cfg.Spec.DiskMiB = 32
	drivertest.Run(t, testCtx(t), d, cfg)
	out, code := drivertest.Exec(t, testCtx(t), d, cfg.ID, "sh", "-c", "head -c 64m /dev/zero | cat > /big")
	if code == 0 || !strings.Contains(out, "No space left on device") {
		t.Errorf("writing 64 MiB on a 32 MiB disk: exit %d, %q; want a failure with ENOSPC", code, out)
	}
	// gVisor's gofer passes the host filesystem's statfs through.
	df := drivertest.ExecOK(t, testCtx(t), d, cfg.ID, "df", "-k", "/")
	fields := strings.Fields(strings.Split(strings.TrimSpace(df), "\n")[1])
	if kb, err := strconv.Atoi(fields[1]); err != nil || kb > 32*1024 || kb < 16*1024 {
		t.Errorf("df inside: / has %s KiB (%v), want at most the 32 MiB limit:\n%s", fields[1], err, df)
	}
}
