package node

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/volume"
	"github.com/hypercore-dev/hypercore/internal/workload"
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

// TestMicroVMVolumeHasOneWriter: a volume a running microVM mounts is not
// mounted anywhere else, and one a running container mounts is not given
// to a microVM; containers share one freely.
func TestMicroVMVolumeHasOneWriter(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	vm := store.Record{ID: spec.NewID(), Desired: workload.DesiredRunning, State: workload.StateRunning, CreatedAt: time.Now().UTC(),
		Spec: spec.Spec{Image: e.ref, Isolation: spec.IsolationMicroVM, Volumes: map[string]string{"db": "/data"}}}
	box := store.Record{ID: spec.NewID(), Desired: workload.DesiredRunning, State: workload.StateRunning, CreatedAt: time.Now().UTC(),
		Spec: spec.Spec{Image: e.ref, Isolation: spec.IsolationContainer, Volumes: map[string]string{"logs": "/logs"}}}
	for _, r := range []store.Record{vm, box} {
		if err := n.Store.Create(r); err != nil {
			t.Fatal(err)
		}
	}
	container := spec.Spec{Isolation: spec.IsolationContainer, Volumes: map[string]string{"db": "/db"}}
	if err := n.checkVolumeWriters(spec.NewID(), container); !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), vm.ID.String()) {
		t.Errorf("a container mounting a running microVM's volume: %v, want ErrInUse naming the VM", err)
	}
	micro := spec.Spec{Isolation: spec.IsolationMicroVM, Volumes: map[string]string{"logs": "/logs"}}
	if err := n.checkVolumeWriters(spec.NewID(), micro); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("a microVM mounting a running container's volume: %v, want ErrInUse", err)
	}
	shared := spec.Spec{Isolation: spec.IsolationGVisor, Volumes: map[string]string{"logs": "/logs"}}
	if err := n.checkVolumeWriters(spec.NewID(), shared); err != nil {
		t.Errorf("gVisor sharing a container's volume: %v, want it allowed", err)
	}
	if err := n.checkVolumeWriters(vm.ID, vm.Spec); err != nil {
		t.Errorf("the microVM itself (its restart): %v", err)
	}
	for _, r := range []store.Record{vm, box} {
		n.Store.Delete(r.ID)
	}
}
