package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

func TestBoltRoundTripAndDurability(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	w := Workload{ID: string(spec.NewID()), Spec: spec.Spec{Image: "busybox", Cores: 1, MemoryMiB: 64}, Desired: DesiredRunning, State: StateCreating, CreatedAt: time.Now()}
	if err := s.Create(w); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(w); err == nil {
		t.Fatal("second Create of one id succeeded")
	}
	if _, err := s.Update(w.ID, func(w *Workload) error { w.State = StateRunning; w.IP = "10.77.0.2"; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(w.ID, func(*Workload) error { return errors.New("refuse") }); err == nil {
		t.Fatal("Update ignored fn's error")
	}
	s.Close()

	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.Get(w.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != StateRunning || got.IP != "10.77.0.2" || got.Spec.Image != "busybox" {
		t.Fatalf("after reopen got %+v", got)
	}
	list, _ := s.List()
	if len(list) != 1 {
		t.Fatalf("List = %d records, want 1", len(list))
	}
	if err := s.Delete(w.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(w.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Update(w.ID, func(*Workload) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Update of missing id: %v, want ErrNotFound", err)
	}
}
