package server

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/api/hypercore/v1/hypercorev1connect"
	"github.com/hypercore-dev/hypercore/internal/volume"
)

// CreateVolume records the volume on the test node.
func (b *backend) CreateVolume(ctx context.Context, name string, sizeMiB int64) (volume.Info, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.vols[name]; ok {
		return volume.Info{}, fmt.Errorf("%w: %s", volume.ErrExists, name)
	}
	v := volume.Info{Record: volume.Record{Name: name, Node: testNodeName, SizeMiB: sizeMiB, CreatedAt: time.Now().UTC()}, UsedBy: []string{}}
	b.vols[name] = v
	return v, nil
}

// Volume returns one volume, with the workloads whose spec mounts it.
func (b *backend) Volume(name string) (volume.Info, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.volume(name)
}

func (b *backend) volume(name string) (volume.Info, error) {
	v, ok := b.vols[name]
	if !ok {
		return volume.Info{}, fmt.Errorf("%w: %s", volume.ErrNotFound, name)
	}
	v.UsedBy = []string{}
	for id, a := range b.allocs {
		if _, ok := a.Spec.Volumes[name]; ok {
			v.UsedBy = append(v.UsedBy, id.String())
		}
	}
	return v, nil
}

// Volumes returns every volume, by name.
func (b *backend) Volumes() ([]volume.Info, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []volume.Info
	for name := range b.vols {
		v, _ := b.volume(name)
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveVolume refuses a volume a workload mounts, as the cluster does.
func (b *backend) RemoveVolume(ctx context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	v, err := b.volume(name)
	if err != nil {
		return err
	}
	if len(v.UsedBy) > 0 {
		return fmt.Errorf("%w: %s is mounted by %v", volume.ErrInUse, name, v.UsedBy)
	}
	delete(b.vols, name)
	return nil
}

// TestVolumeRoutes checks REST's /v1/volumes and Connect's VolumeService:
// create with the default size, list, inspect with its users, 409 for a
// second create and for removing a volume a workload mounts, 400 for a bad
// name or size, 404 for an unknown one.
func TestVolumeRoutes(t *testing.T) {
	a := newAPI(t, newBackend(t))
	var v volume.Info
	a.callJSON("POST", "/v1/volumes", `{"name":"pgdata"}`, &v)
	if v.Name != "pgdata" || v.SizeMiB != 1024 || v.Node != testNodeName {
		t.Fatalf("created %+v, want pgdata of 1024 MiB on %s", v, testNodeName)
	}
	if r := a.call("POST", "/v1/volumes", `{"name":"pgdata","size_mib":64}`); r.code != http.StatusConflict {
		t.Errorf("second create: %d %s, want 409", r.code, r.body)
	}
	for _, body := range []string{`{"name":"Bad Name"}`, `{"name":"ok","size_mib":1}`, `{"name":"ok","size_mib":99999999999}`, `{"name":"ok","extra":1}`} {
		if r := a.call("POST", "/v1/volumes", body); r.code != http.StatusBadRequest {
			t.Errorf("create %s: %d %s, want 400", body, r.code, r.body)
		}
	}
	w := a.b.addWorkload(t, mustSpec(t, `{"image_ref":"`+webRef+`","volumes":{"pgdata":"/var/lib/postgresql/data"}}`))
	a.callJSON("GET", "/v1/volumes/pgdata", "", &v)
	if len(v.UsedBy) != 1 || v.UsedBy[0] != w.ID.String() {
		t.Errorf("inspect: %+v, want used by %s", v, w.ID)
	}
	if r := a.call("DELETE", "/v1/volumes/pgdata", ""); r.code != http.StatusConflict || !strings.Contains(r.body, w.ID.String()) {
		t.Errorf("removing a mounted volume: %d %s, want 409 naming the workload", r.code, r.body)
	}
	if r := a.call("GET", "/v1/volumes", ""); r.code != 200 || !strings.Contains(r.body, `"pgdata"`) {
		t.Errorf("list: %d %s", r.code, r.body)
	}
	if r := a.call("GET", "/v1/volumes/nope", ""); r.code != http.StatusNotFound {
		t.Errorf("unknown volume: %d %s, want 404", r.code, r.body)
	}

	client := hypercorev1connect.NewVolumeServiceClient(a.httpClient(false), a.srv.URL,
		connect.WithInterceptors(tokenInterceptor{"Bearer " + testToken}))
	req := connect.NewRequest(&v1.RemoveVolumeRequest{Name: "pgdata"})
	if _, err := client.RemoveVolume(context.Background(), req); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("connect RemoveVolume of a mounted volume: %v, want failed_precondition", err)
	}
	a.b.Remove(context.Background(), w.ID)
	if _, err := client.RemoveVolume(context.Background(), req); err != nil {
		t.Errorf("connect RemoveVolume: %v", err)
	}
	if r := a.call("GET", "/v1/volumes/pgdata", ""); r.code != http.StatusNotFound {
		t.Errorf("after remove: %d %s, want 404", r.code, r.body)
	}
}
