package e2e

import (
	"strconv"
	"strings"
	"testing"
)

// TestDiskLimit checks a workload's disk limit through the CLI, as an
// outside script would: a write past `spawn --disk` fails with ENOSPC
// inside (seen through `hypercore exec`), df shows the limit, inspect
// shows it, and a workload with no --disk gets the node's --default-disk.
func TestDiskLimit(t *testing.T) {
	n, ref := newNode(t, "--default-disk", "64")

	id := cliSpawn(t, n, "--disk", "32", ref)
	out, err := n.CLI("exec", id, "sh", "-c", "head -c 48m /dev/zero | cat > /big")
	if err == nil || !strings.Contains(out, "No space left on device") {
		t.Errorf("writing 48 MiB past a 32 MiB disk: %v\n%s\nwant a failure with ENOSPC", err, out)
	}
	if kb := rootKiB(t, n.CLI, id); kb > 32*1024 || kb < 16*1024 {
		t.Errorf("df inside a --disk 32 workload: / has %d KiB", kb)
	}
	if out, err := n.CLI("inspect", id); err != nil || !strings.Contains(out, `"disk": 32`) {
		t.Errorf("inspect of a --disk 32 workload: %v\n%s", err, out)
	}

	def := cliSpawn(t, n, ref)
	if kb := rootKiB(t, n.CLI, def); kb > 64*1024 || kb < 32*1024 {
		t.Errorf("df inside a workload with the node's --default-disk 64: / has %d KiB", kb)
	}
}

// rootKiB is the size of / inside workload id, as df says through exec.
func rootKiB(t *testing.T, cli func(...string) (string, error), id string) int {
	t.Helper()
	out, err := cli("exec", id, "df", "-k", "/")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) < 2 {
		t.Fatalf("exec df: %v\n%s", err, out)
	}
	fields := strings.Fields(lines[len(lines)-1])
	kb, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatalf("df said %q", out)
	}
	return kb
}
