package raftstore

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

func createKeyed(t *testing.T, f *fsm, index uint64, id spec.ID, key string, at time.Time) error {
	t.Helper()
	a := alloc(t, id, "n1", nil)
	a.CreatedAt = at
	return applyAt(t, f, index, command{Op: opCreateAllocation, ID: id, Allocation: &a, RequestKey: key})
}

func keyHolder(f *fsm, key string) (spec.ID, bool) {
	s := &Store{fsm: f}
	return s.RequestKey(key)
}

// TestFSMRequestKey checks that a key claimed by a workload that exists
// refuses a second create (ErrExists, nothing written), survives a
// snapshot, and is free again once its workload is gone.
func TestFSMRequestKey(t *testing.T) {
	f := newFSM()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	if err := createKeyed(t, f, 1, idA, "k1", t0); err != nil {
		t.Fatal(err)
	}
	err := createKeyed(t, f, 2, idB, "k1", t0.Add(time.Second))
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second create with the same key: %v, want ErrExists", err)
	}
	if _, ok := f.get(idB); ok {
		t.Fatal("the refused create was written")
	}
	if id, ok := keyHolder(f, "k1"); !ok || id != idA {
		t.Fatalf("key k1 holder %s %v, want %s", id, ok, idA)
	}
	// Another key, or none, creates as usual.
	if err := createKeyed(t, f, 3, idB, "k2", t0); err != nil {
		t.Fatal(err)
	}
	if err := applyAt(t, f, 4, create(alloc(t, idC, "n1", nil))); err != nil {
		t.Fatal(err)
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
	if err := createKeyed(t, g, 5, idD, "k1", t0); !errors.Is(err, ErrExists) {
		t.Fatalf("after restore, create with key k1: %v, want ErrExists", err)
	}

	// Removed: the key is free, and a new create claims it.
	if err := applyAt(t, g, 6, command{Op: opDelete, ID: idA}); err != nil {
		t.Fatal(err)
	}
	if _, ok := keyHolder(g, "k1"); ok {
		t.Fatal("key k1 still held after its workload was removed")
	}
	if err := createKeyed(t, g, 7, idD, "k1", t0); err != nil {
		t.Fatalf("create with the key of a removed workload: %v", err)
	}
	if id, _ := keyHolder(g, "k1"); id != idD {
		t.Fatalf("key k1 holder %s, want %s", id, idD)
	}
}

// TestFSMRequestKeysExpireAndAreBounded checks that keys older than the
// TTL (by the allocations' own times) go, and that the table never grows
// past MaxRequestKeys, losing its oldest key first.
func TestFSMRequestKeysExpireAndAreBounded(t *testing.T) {
	f := newFSM()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	if err := createKeyed(t, f, 1, idA, "old", t0); err != nil {
		t.Fatal(err)
	}
	if err := createKeyed(t, f, 2, idB, "new", t0.Add(RequestKeyTTL+time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.keys["old"]; ok {
		t.Fatal("a key older than RequestKeyTTL was kept")
	}
	if _, ok := f.keys["new"]; !ok {
		t.Fatal("the new key was not kept")
	}

	// Fill to the bound directly (creating 10000 allocations through
	// Apply is slow and says no more), then claim one more.
	f.keys = map[string]requestKey{}
	for i := range MaxRequestKeys {
		f.keys[fmt.Sprintf("k%05d", i)] = requestKey{ID: idA, At: t0.Add(time.Duration(i) * time.Second)}
	}
	if err := createKeyed(t, f, 3, idC, "last", t0.Add(time.Hour*3)); err != nil {
		t.Fatal(err)
	}
	if len(f.keys) != MaxRequestKeys {
		t.Fatalf("%d keys, want at most %d", len(f.keys), MaxRequestKeys)
	}
	if _, ok := f.keys["k00000"]; ok {
		t.Fatal("the oldest key was kept past the bound")
	}
	if _, ok := f.keys["last"]; !ok {
		t.Fatal("the newest key was dropped")
	}
}
