package store

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

func TestBoltRoundTripAndDurability(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	r := Record{ID: spec.NewID(), Spec: spec.Spec{Image: "busybox", Cores: 1, MemoryMiB: 64}, Generation: 3,
		Desired: workload.DesiredRunning, State: workload.StateCreating, CreatedAt: time.Now().UTC()}
	if err := s.Create(r); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(r); err == nil {
		t.Fatal("second Create of one id succeeded")
	}
	other := spec.NewID()
	if _, err := s.Update(r.ID, func(r *Record) error {
		r.State, r.ImageDigest, r.ID = workload.StateRunning, "sha256:abc", other
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(r.ID, func(*Record) error { return errors.New("refuse") }); err == nil {
		t.Fatal("Update ignored fn's error")
	}
	s.Close()

	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != workload.StateRunning || got.ImageDigest != "sha256:abc" || got.Spec.Image != "busybox" || got.Generation != 3 || got.ID != r.ID {
		t.Fatalf("after reopen got %+v", got)
	}
	list, _ := s.List()
	if len(list) != 1 || list[0].ID != r.ID {
		t.Fatalf("List = %+v, want the one record under its own id (Update must not move it)", list)
	}
	if err := s.Delete(r.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(r.ID); !errors.Is(err, ErrNotFound) || !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound (workload.ErrNotFound)", err)
	}
	if _, err := s.Update(r.ID, func(*Record) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update of missing id: %v, want ErrNotFound", err)
	}
	if err := s.Delete(r.ID); err != nil {
		t.Fatalf("Delete of a missing id: %v, want nil", err)
	}
}

func TestListOldestFirst(t *testing.T) {
	s, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	// Created newest first, and two sharing a time, so neither the bbolt
	// key order nor insertion order passes for the right one by luck.
	ids := []spec.ID{"ffffffff-0000-4000-8000-000000000000", "00000000-0000-4000-8000-000000000000", "0fffffff-0000-4000-8000-000000000000"}
	times := []time.Time{t0.Add(2 * time.Hour), t0.Add(time.Hour), t0.Add(time.Hour)}
	for i, id := range ids {
		if err := s.Create(Record{ID: id, CreatedAt: times[i]}); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []spec.ID
	for _, r := range list {
		got = append(got, r.ID)
	}
	if want := []spec.ID{ids[1], ids[2], ids[0]}; !slices.Equal(got, want) {
		t.Errorf("List order %v, want %v", got, want)
	}
}

// oldRecords are records as the daemon wrote them to state.db before the
// allocation/observation split (store.Workload, JSON-encoded): one that
// exited with code 3 and one running, ready, with a pid, IP and error
// field, under a node name the new daemon may not share.
const (
	oldExited  = `{"id":"497b6ad8-11a3-4701-8b6a-11396e11ca7d","spec":{"image":"registry.example/web:1","cores":0.5,"memory_mib":64,"ports":[{"public":80,"target":8080,"proto":"http"},{"public":2222,"target":22,"proto":"tcp"}],"env":["A=b"],"args":["httpd","-f"],"isolation":"container"},"desired":"running","state":"exited","node":"old-node","ip":"10.77.0.2","exit_code":3,"image_digest":"sha256:0000000000000000000000000000000000000000000000000000000000000001","created_at":"2025-03-01T12:00:00.123456789Z"}`
	oldRunning = `{"id":"5a0c1e2f-3b4d-4e5f-8a6b-7c8d9e0f1a2b","spec":{"image":"registry.example/web:1","cores":1,"memory_mib":256,"isolation":"container"},"desired":"stopped","state":"running","node":"old-node","ip":"10.77.0.3","pid":4242,"ready":true,"image_digest":"sha256:0000000000000000000000000000000000000000000000000000000000000002","error":"an old error","created_at":"2025-03-01T12:00:01Z"}`
)

// TestOldRecordsDecode writes records of the previous release into the
// bucket as it left them and reads them through the new Record: every
// field the record kept comes back, the dropped ones are ignored, and a
// record with no generation answers generation 1.
func TestOldRecordsDecode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists([]byte("workloads"))
		if err != nil {
			return err
		}
		for _, rec := range []string{oldExited, oldRunning} {
			var k struct{ ID string }
			if err := json.Unmarshal([]byte(rec), &k); err != nil {
				return err
			}
			if err := bk.Put([]byte(k.ID), []byte(rec)); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("List of the old store: %d records, want 2", len(list))
	}
	ex, run := list[0], list[1]
	wantSpec := spec.Spec{Image: "registry.example/web:1", Cores: 0.5, MemoryMiB: 64,
		Ports: []spec.Port{{Public: 80, Target: 8080, Proto: spec.ProtoHTTP}, {Public: 2222, Target: 22, Proto: spec.ProtoTCP}},
		Env:   []string{"A=b"}, Args: []string{"httpd", "-f"}, Isolation: spec.IsolationContainer}
	if ex.ID != "497b6ad8-11a3-4701-8b6a-11396e11ca7d" || ex.Desired != workload.DesiredRunning || ex.State != workload.StateExited ||
		ex.ExitCode != 3 || ex.Generation != 1 || ex.ImageDigest != "sha256:"+strings.Repeat("0", 63)+"1" ||
		!ex.CreatedAt.Equal(time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)) {
		t.Errorf("old exited record read as %+v", ex)
	}
	if b1, b2 := mustJSON(t, ex.Spec), mustJSON(t, wantSpec); b1 != b2 {
		t.Errorf("old exited record's spec read as %s, want %s", b1, b2)
	}
	if run.ID != "5a0c1e2f-3b4d-4e5f-8a6b-7c8d9e0f1a2b" || run.Desired != workload.DesiredStopped || run.State != workload.StateRunning ||
		run.Generation != 1 || run.Spec.MemoryMiB != 256 || run.Spec.Isolation != spec.IsolationContainer {
		t.Errorf("old running record read as %+v", run)
	}
	if got, err := s.Get(run.ID); err != nil || got.State != workload.StateRunning || got.Generation != 1 {
		t.Errorf("Get of an old record: %+v %v", got, err)
	}

	// Once the new daemon updates an old record, it is stored in the new
	// shape: nothing the host gives back is kept.
	if _, err := s.Update(run.ID, func(r *Record) error { r.State = workload.StateStopped; return nil }); err != nil {
		t.Fatal(err)
	}
	var raw map[string]json.RawMessage
	s.db.View(func(tx *bolt.Tx) error {
		return json.Unmarshal(tx.Bucket(bucket).Get([]byte(run.ID)), &raw)
	})
	for _, gone := range []string{"node", "ip", "pid", "ready", "error"} {
		if _, ok := raw[gone]; ok {
			t.Errorf("rewritten record still has %q: %v", gone, raw)
		}
	}
	if string(raw["generation"]) != "1" || string(raw["state"]) != `"stopped"` {
		t.Errorf("rewritten record %v, want generation 1 and state stopped", raw)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestListParsesKeys: the keys of state.db come back from disk, so List
// parses them as ids and refuses a key that is none (such a key would
// become a file name in the drivers), and a record's id is its key's, not
// the copy inside it.
func TestListParsesKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	id := spec.NewID()
	put := func(key, rec string) {
		t.Helper()
		if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(key), []byte(rec)) }); err != nil {
			t.Fatal(err)
		}
	}
	put(id.String(), `{"id":"../elsewhere","desired":"running","state":"running"}`)
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("List = %+v, %v; want the one record, with its key %s as id", list, err, id)
	}
	if got, err := s.Get(id); err != nil || got.ID != id {
		t.Errorf("Get = %+v, %v; want id %s", got, err, id)
	}
	put("../../etc", `{"id":"../../etc","desired":"running","state":"running"}`)
	if list, err := s.List(); err == nil || !strings.Contains(err.Error(), "../../etc") {
		t.Errorf("List over a key that is no id = %+v, %v; want an error naming it", list, err)
	}
}
