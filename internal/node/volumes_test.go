package node

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/volume"
)

// TestVolumeOutlivesItsWorkload is the pattern of PostgreSQL's official
// image with a data volume: data written under the volume's path, the
// workload removed, a new one spawned with the same volume finds it. The
// volume cannot be removed while a workload mounts it, and a write past
// its size fails.
func TestVolumeOutlivesItsWorkload(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	if err := n.CreateVolume(ctx(t), "pgdata", 16); err != nil {
		t.Fatal(err)
	}
	const body = `{"volumes":{"pgdata":"/var/lib/postgresql/data"},"user":"1000:1000","args":["sleep","1000"]}`
	first := n.spawn(body)
	sh := func(id any, script string) (int, string) {
		t.Helper()
		var out bytes.Buffer
		w := id.(spawned)
		code, err := n.Exec(ctx(t), w.ID, driver.ExecConfig{Args: []string{"sh", "-c", script}, IO: driver.IO{Stdout: &out, Stderr: &out}})
		if err != nil {
			t.Fatalf("exec %q: %v", script, err)
		}
		return code, out.String()
	}
	if code, out := sh(first, "echo 16 > /var/lib/postgresql/data/PG_VERSION && id -u"); code != 0 || strings.TrimSpace(out) != "1000" {
		t.Fatalf("writing to the volume as uid 1000: %d %q", code, out)
	}
	if code, out := sh(first, "dd if=/dev/zero of=/var/lib/postgresql/data/big bs=1M count=32"); code == 0 || !strings.Contains(out, "No space left") {
		t.Errorf("writing 32 MiB to a 16 MiB volume: %d %q, want no space left", code, out)
	}
	sh(first, "rm -f /var/lib/postgresql/data/big")
	if err := n.RemoveVolume(ctx(t), "pgdata"); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("removing a mounted volume: %v, want ErrInUse", err)
	}
	if err := n.Remove(ctx(t), first.ID); err != nil {
		t.Fatal(err)
	}
	second := n.spawn(body)
	if code, out := sh(second, "cat /var/lib/postgresql/data/PG_VERSION"); code != 0 || out != "16\n" {
		t.Fatalf("the data in a new workload with the same volume: %d %q, want 16", code, out)
	}
	n.removeAll()
	if err := n.RemoveVolume(ctx(t), "pgdata"); err != nil {
		t.Fatalf("removing a volume no workload mounts: %v", err)
	}
	if names, _ := n.LocalVolumes(); len(names) != 0 {
		t.Errorf("volumes left: %v", names)
	}
}
