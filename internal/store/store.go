// Package store keeps a node's re-adoption notes: for each workload the node
// hosts, what it needs to find, restart or finish it after the daemon
// restarts. It is not where desired state lives (the cluster's allocations
// are) nor where the cluster learns what runs (the node's reports are); a
// record is only the node's memory of what it was told and where it got to.
//
// Records live in one bbolt file, state.db, in the bucket "workloads", with
// the JSON names of the records written before the allocation/observation
// split, so the data dir of an older daemon is read in place.
package store

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// ErrNotFound is returned for an id the store has no record of. It is
// workload.ErrNotFound itself, so a caller past the node (the API) tells
// "no such workload" apart with one sentinel, wherever it was found missing.
var ErrNotFound = workload.ErrNotFound

// Record is what a node keeps about one workload it hosts.
//
// Invariants:
//   - every record in a node's store is that node's: a record is created
//     when the node is told to run a workload and deleted when it removes
//     it, so there is no node name to filter on;
//   - State is the local phase the node last reached: StateCreating (a
//     start under way: a crash here means start again from scratch),
//     StateRunning, StateExited or StateStopped; never StatePending;
//   - what the host gives back after a restart is not stored: the IP
//     (the network lease), the pid (the driver), readiness (the probe).
//     So a stale copy of them cannot be reported;
//   - the JSON names are those of the records before the split; the fields
//     old records carry and Record dropped (node, ip, pid, ready, error)
//     are ignored when read, and a record without a generation reads as
//     generation 1, the generation the cluster gives an old allocation.
type Record struct {
	ID   spec.ID   `json:"id"`
	Spec spec.Spec `json:"spec"`
	// Generation is the allocation generation the node is acting on; it
	// goes into every observation reported for the record.
	Generation uint64           `json:"generation,omitempty"`
	Desired    workload.Desired `json:"desired"`
	State      workload.State   `json:"state"`
	// ImageDigest is the image the workload was started from, so a restart
	// re-adopts it with the same rootfs even if its tag moved.
	ImageDigest string `json:"image_digest,omitempty"`
	// ExitCode is the exit code of a workload that exited by itself.
	ExitCode int `json:"exit_code,omitempty"`
	// Restarts counts the restarts by the workload's restart policy since
	// it was spawned or last started, so a daemon restart keeps counting.
	Restarts  int       `json:"restarts,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Records is where a node's records live. Implementations make each call
// durable before returning.
type Records interface {
	// Get returns the record of id, or ErrNotFound.
	Get(id spec.ID) (Record, error)
	// List returns every record, oldest first, ties by id.
	List() ([]Record, error)
	// Create stores a new record; it fails if the id exists.
	Create(r Record) error
	// Update applies fn to the record of id atomically and stores the
	// result; it returns ErrNotFound if there is no such record. fn cannot
	// change the id.
	Update(id spec.ID, fn func(*Record) error) (Record, error)
	// Delete removes the record of id; a missing id is not an error.
	Delete(id spec.ID) error
}

var bucket = []byte("workloads")

// Bolt is a Records kept in a bbolt file.
type Bolt struct {
	db *bolt.DB
}

var _ Records = (*Bolt)(nil)

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

// Get implements Records.
func (b *Bolt) Get(id spec.ID) (Record, error) {
	var r Record
	err := b.db.View(func(tx *bolt.Tx) error {
		data := tx.Bucket(bucket).Get([]byte(id))
		if data == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		return decode(id, data, &r)
	})
	return r, err
}

// List implements Records.
func (b *Bolt) List() ([]Record, error) {
	var out []Record
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, data []byte) error {
			// The keys come back from disk: parsed here, they are the
			// ids the node hands its drivers and network as file names.
			id, err := spec.ParseID(string(k))
			if err != nil {
				return fmt.Errorf("store: state.db holds a record under a key that is no workload id: %w", err)
			}
			var r Record
			if err := decode(id, data, &r); err != nil {
				return err
			}
			out = append(out, r)
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

// Create implements Records.
func (b *Bolt) Create(r Record) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		if bk.Get([]byte(r.ID)) != nil {
			return fmt.Errorf("store: workload %s already exists", r.ID)
		}
		return put(bk, r)
	})
}

// Update implements Records.
func (b *Bolt) Update(id spec.ID, fn func(*Record) error) (Record, error) {
	var r Record
	err := b.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucket)
		data := bk.Get([]byte(id))
		if data == nil {
			return fmt.Errorf("%w: %s", ErrNotFound, id)
		}
		if err := decode(id, data, &r); err != nil {
			return err
		}
		if err := fn(&r); err != nil {
			return err
		}
		r.ID = id
		return put(bk, r)
	})
	return r, err
}

// Delete implements Records.
func (b *Bolt) Delete(id spec.ID) error {
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).Delete([]byte(id))
	})
}

// decode reads the record stored under id, old or new. The record's ID is
// the key's, which the caller has checked, rather than the copy inside it.
func decode(id spec.ID, data []byte, r *Record) error {
	if err := json.Unmarshal(data, r); err != nil {
		return fmt.Errorf("store: record %s in state.db is unreadable: %w", id, err)
	}
	r.ID = id
	// Records from before generations answer the first allocation, as
	// the cluster numbers an allocation it reads from an older log.
	if r.Generation == 0 {
		r.Generation = 1
	}
	return nil
}

func put(bk *bolt.Bucket, r Record) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return bk.Put([]byte(r.ID), data)
}
