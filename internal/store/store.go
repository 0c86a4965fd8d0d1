// Package store keeps a node's durable record of workloads. The Workloads
// interface is the seam between the node and where desired state lives: a
// bbolt file for a cluster of one, the raft state machine for a cluster.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// ErrNotFound is returned for an id the store has no record of.
var ErrNotFound = errors.New("workload not found")

// Desired is what the user wants a workload to be doing.
type Desired string

// The desired states.
const (
	DesiredRunning Desired = "running"
	DesiredStopped Desired = "stopped"
)

// State is what a node last observed a workload doing.
type State string

// The observed states.
const (
	// StateCreating: placed and being pulled, networked and started. A
	// record left in this state by a crash is started again from scratch.
	StateCreating State = "creating"
	// StatePending: placed by the cluster on a node (after a failover),
	// whose reconciler starts it.
	StatePending State = "pending"
	StateRunning State = "running"
	// StateExited: its process ended by itself while it was meant to run.
	StateExited  State = "exited"
	StateStopped State = "stopped"
)

// Workload is the record of one workload: what was asked and what was seen.
type Workload struct {
	ID          string    `json:"id"`
	Spec        spec.Spec `json:"spec"`
	Desired     Desired   `json:"desired"`
	State       State     `json:"state"`
	Node        string    `json:"node"`
	IP          string    `json:"ip,omitempty"`
	Pid         int       `json:"pid,omitempty"`
	ExitCode    int       `json:"exit_code,omitempty"`
	Ready       bool      `json:"ready,omitempty"`
	ImageDigest string    `json:"image_digest,omitempty"`
	Error       string    `json:"error,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// Workloads is where workload records live. Implementations make each call
// durable before returning.
type Workloads interface {
	// Get returns the record of id, or ErrNotFound.
	Get(id string) (Workload, error)
	// List returns every record, oldest first.
	List() ([]Workload, error)
	// Create stores a new record; it fails if the id exists.
	Create(w Workload) error
	// Update applies fn to the record of id atomically and stores the
	// result; it returns ErrNotFound if there is no such record.
	Update(id string, fn func(*Workload) error) (Workload, error)
	// Delete removes the record of id; a missing id is not an error.
	Delete(id string) error
}

var bucket = []byte("workloads")

// Bolt is a Workloads kept in a bbolt file.
type Bolt struct {
	db *bolt.DB
}

var _ Workloads = (*Bolt)(nil)

// OpenBolt opens (or creates) the store file at path.
func OpenBolt(path string) (*Bolt, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("store: create %s: %w", filepath.Dir(path), err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("store: open %s (is another hypercore using this --data-dir?): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("store: init %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Close closes the file.
func (b *Bolt) Close() error { return b.db.Close() }

// Get implements Workloads.
func (b *Bolt) Get(id string) (Workload, error) {
	var w Workload
	err := b.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucket).Get([]byte(id))
		if data == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return json.Unmarshal(data, &w)
	})
	return w, err
}

// List implements Workloads.
func (b *Bolt) List() ([]Workload, error) {
	var out []Workload
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(_, data []byte) error {
			var w Workload
			if err := json.Unmarshal(data, &w); err != nil {
				return err
			}
			out = append(out, w)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, err
}

// Create implements Workloads.
func (b *Bolt) Create(w Workload) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		if bk.Get([]byte(w.ID)) != nil {
			return fmt.Errorf("store: workload %s already exists", w.ID)
		}
		return put(bk, w)
	})
}

// Update implements Workloads.
func (b *Bolt) Update(id string, fn func(*Workload) error) (Workload, error) {
	var w Workload
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		data := bk.Get([]byte(id))
		if data == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if err := json.Unmarshal(data, &w); err != nil {
			return err
		}
		if err := fn(&w); err != nil {
			return err
		}
		w.ID = id
		return put(bk, w)
	})
	return w, err
}

// Delete implements Workloads.
func (b *Bolt) Delete(id string) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Delete([]byte(id))
	})
}

func put(bk *bolt.Bucket, w Workload) error {
	data, err := json.Marshal(w)
	if err != nil {
		return err
	}
	return bk.Put([]byte(w.ID), data)
}
