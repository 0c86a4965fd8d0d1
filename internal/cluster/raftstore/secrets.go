package raftstore

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// Sealed secrets: the state keeps each secret's value only as the cluster
// sealed it (internal/cluster/sealed), so the raft log and snapshots hold
// ciphertext. This package never sees a plain value.
const (
	// opSetSecret stores a sealed secret, replacing one of the same name.
	opSetSecret = "set-secret"
	// opRemoveSecret removes a secret.
	opRemoveSecret = "remove-secret"
	// maxSealedBytes bounds a sealed value: a value at spec's limit plus
	// the sealing's overhead, with room to spare.
	maxSealedBytes = spec.MaxSecretBytes + 256
	// MaxSecretCount bounds how many secrets the cluster holds.
	MaxSecretCount = 1000
)

// Secret is a sealed secret as the state holds it.
type Secret struct {
	Name string `json:"name"`
	// Sealed is the value as internal/cluster/sealed sealed it.
	Sealed []byte `json:"sealed,omitempty"`
	// UpdatedAt is when it was last set, by the setter's clock.
	UpdatedAt time.Time `json:"updated_at"`
}

// SetSecret stores s (its value already sealed), replacing a secret of the
// same name.
func (s *Store) SetSecret(sec Secret) error {
	if err := spec.ValidateSecretName(sec.Name); err != nil {
		return err
	}
	_, err := s.apply(command{Op: opSetSecret, Secret: &sec})
	return err
}

// RemoveSecret removes the secret called name, or fails with ErrNoSecret.
func (s *Store) RemoveSecret(name string) error {
	_, err := s.apply(command{Op: opRemoveSecret, Secret: &Secret{Name: name}})
	return err
}

// ErrNoSecret is the result of removing a secret that does not exist. It
// is a workload.ErrNotFound, so it keeps its meaning across a forward to
// the leader and the API answers it 404.
var ErrNoSecret = fmt.Errorf("no such secret: %w", workload.ErrNotFound)

// Secret returns the sealed secret called name from this node's copy.
func (s *Store) Secret(name string) (Secret, bool) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	sec, ok := s.fsm.secrets[name]
	if ok {
		sec.Sealed = slices.Clone(sec.Sealed)
	}
	return sec, ok
}

// Secrets lists the secrets by name, without their sealed values.
func (s *Store) Secrets() []Secret {
	s.fsm.mu.RLock()
	out := make([]Secret, 0, len(s.fsm.secrets))
	for _, sec := range s.fsm.secrets {
		out = append(out, Secret{Name: sec.Name, UpdatedAt: sec.UpdatedAt})
	}
	s.fsm.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// checkSecret is check's part for the secret ops.
func checkSecret(c *command) error {
	if c.Secret == nil || spec.ValidateSecretName(c.Secret.Name) != nil {
		return fmt.Errorf("%w: %s without a valid secret name", ErrBadCommand, c.Op)
	}
	if c.Op == opSetSecret && (len(c.Secret.Sealed) == 0 || len(c.Secret.Sealed) > maxSealedBytes) {
		return fmt.Errorf("%w: %s %s: sealed value of %d bytes; 1-%d", ErrBadCommand, c.Op, c.Secret.Name, len(c.Secret.Sealed), maxSealedBytes)
	}
	return nil
}

// applySecret applies a secret op. The caller holds f.mu.
func (f *fsm) applySecret(c *command) error {
	name := c.Secret.Name
	switch c.Op {
	case opSetSecret:
		if _, ok := f.secrets[name]; !ok && len(f.secrets) >= MaxSecretCount {
			return fmt.Errorf("raftstore: the cluster holds %d secrets, the most it keeps; remove one first", MaxSecretCount)
		}
		f.secrets[name] = *c.Secret
	case opRemoveSecret:
		if _, ok := f.secrets[name]; !ok {
			return fmt.Errorf("raftstore: %w: %s", ErrNoSecret, name)
		}
		delete(f.secrets, name)
	}
	return nil
}
