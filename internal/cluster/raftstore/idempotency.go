package raftstore

import (
	"fmt"
	"time"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// Idempotency keys: a spawn may carry a client's key, and the allocation
// it records claims the key in the cluster state, so a retry of the spawn
// (through any node, after any restart) finds the workload the first one
// made instead of making another. The claim is part of the same log
// entry as the allocation, so two spawns racing with one key cannot both
// win.
const (
	// RequestKeyTTL is how long a key is remembered. Time here is the
	// allocations' CreatedAt, which the log carries, so every server
	// expires the same keys.
	RequestKeyTTL = 24 * time.Hour
	// MaxRequestKeys bounds the table; past it the oldest keys go first.
	MaxRequestKeys = 10000
)

// requestKey is one claimed key: the workload it made, and when.
type requestKey struct {
	ID spec.ID   `json:"id"`
	At time.Time `json:"at"`
}

// CreateKeyed is Create for a spawn that carries the idempotency key key
// (already checked with spec.ParseRequestID). If an allocation that still
// exists claimed key, nothing is written and the error is an ErrExists
// that names it; RequestKey then finds its id on this node's copy. A key
// whose workload is gone (its spawn failed, or it was removed) is free
// again.
func (s *Store) CreateKeyed(a workload.Allocation, key string) error {
	if key == "" {
		return s.Create(a)
	}
	if a.ID == "" || a.Node == "" {
		return fmt.Errorf("raftstore: create: an allocation needs an id and a node")
	}
	_, err := s.apply(command{Op: opCreateAllocation, ID: a.ID, Allocation: &a, RequestKey: key})
	return err
}

// RequestKey returns the workload whose spawn claimed key, if that
// workload still exists, from this node's copy of the state.
func (s *Store) RequestKey(key string) (spec.ID, bool) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	k, ok := s.fsm.keys[key]
	if !ok {
		return "", false
	}
	_, exists := s.fsm.allocs[k.ID]
	return k.ID, exists
}

// createKeyed applies a create-allocation that claims key: it refuses a
// key held by a workload that still exists, creates, and records the
// claim, dropping expired keys and, past MaxRequestKeys, the oldest. The
// caller holds f.mu.
func (f *fsm) createKeyed(a workload.Allocation, key string, index uint64) error {
	if k, ok := f.keys[key]; ok {
		if _, exists := f.allocs[k.ID]; exists {
			return fmt.Errorf("raftstore: %w: request key %q made workload %s", ErrExists, key, k.ID)
		}
	}
	if err := f.create(a, nil, index, true); err != nil {
		return err
	}
	now := a.CreatedAt
	for k, r := range f.keys {
		if now.Sub(r.At) > RequestKeyTTL {
			delete(f.keys, k)
		}
	}
	for len(f.keys) >= MaxRequestKeys {
		var oldest string
		for k, r := range f.keys {
			if oldest == "" || r.At.Before(f.keys[oldest].At) || (r.At.Equal(f.keys[oldest].At) && k < oldest) {
				oldest = k
			}
		}
		delete(f.keys, oldest)
	}
	f.keys[key] = requestKey{ID: a.ID, At: now}
	return nil
}
