package raftstore

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/workload"
)

// TestFSMSecrets checks set, replace, list without values, snapshot and
// restore, remove, and the refusal of bad secret commands.
func TestFSMSecrets(t *testing.T) {
	f := newFSM()
	s := &Store{fsm: f}
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	set := func(index uint64, name string, sealed []byte) error {
		return applyAt(t, f, index, command{Op: opSetSecret, Secret: &Secret{Name: name, Sealed: sealed, UpdatedAt: at}})
	}
	if err := set(1, "db", []byte("cipher-1")); err != nil {
		t.Fatal(err)
	}
	if err := set(2, "db", []byte("cipher-2")); err != nil {
		t.Fatal(err)
	}
	if err := set(3, "api-key", []byte("cipher-3")); err != nil {
		t.Fatal(err)
	}
	if got, ok := s.Secret("db"); !ok || !bytes.Equal(got.Sealed, []byte("cipher-2")) {
		t.Fatalf("secret db = %+v %v, want the replaced value", got, ok)
	}
	list := s.Secrets()
	if len(list) != 2 || list[0].Name != "api-key" || list[1].Name != "db" || list[0].Sealed != nil || list[1].Sealed != nil {
		t.Fatalf("list %+v, want api-key and db, by name, without values", list)
	}

	snap, _ := f.Snapshot()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(&sink.buf)); err != nil {
		t.Fatal(err)
	}
	if got, ok := (&Store{fsm: g}).Secret("db"); !ok || !bytes.Equal(got.Sealed, []byte("cipher-2")) {
		t.Fatalf("restored secret db = %+v %v", got, ok)
	}

	if err := applyAt(t, f, 4, command{Op: opRemoveSecret, Secret: &Secret{Name: "db"}}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Secret("db"); ok {
		t.Fatal("removed secret still there")
	}
	err := applyAt(t, f, 5, command{Op: opRemoveSecret, Secret: &Secret{Name: "db"}})
	if !errors.Is(err, ErrNoSecret) || !errors.Is(err, workload.ErrNotFound) {
		t.Fatalf("removing a missing secret: %v, want ErrNoSecret (a not found)", err)
	}
	for name, c := range map[string]command{
		"bad name":   {Op: opSetSecret, Secret: &Secret{Name: "../x", Sealed: []byte("c")}},
		"no value":   {Op: opSetSecret, Secret: &Secret{Name: "x"}},
		"no secret":  {Op: opRemoveSecret},
		"huge value": {Op: opSetSecret, Secret: &Secret{Name: "x", Sealed: make([]byte, maxSealedBytes+1)}},
	} {
		if err := applyAt(t, f, 6, c); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: %v, want ErrBadCommand", name, err)
		}
	}
}
