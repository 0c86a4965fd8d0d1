package raftstore

import (
	"fmt"
	"slices"
)

// The cluster's authority (the CA key and the join secret), sealed by the
// node that made the CA (internal/cluster/sealed), so every server can
// admit new nodes once that node is gone. Only ciphertext is in the log.
const (
	// opSetAuthority stores the sealed authority.
	opSetAuthority = "set-authority"
	// maxAuthorityBytes bounds it: a PEM key and 32 bytes, sealed.
	maxAuthorityBytes = 8 << 10
)

// SetAuthority records the sealed authority.
func (s *Store) SetAuthority(sealed []byte) error {
	_, err := s.apply(command{Op: opSetAuthority, Authority: sealed})
	return err
}

// Authority returns the sealed authority, if the state holds it.
func (s *Store) Authority() ([]byte, bool) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return slices.Clone(s.fsm.authority), len(s.fsm.authority) > 0
}

func checkAuthority(c *command) error {
	if len(c.Authority) == 0 || len(c.Authority) > maxAuthorityBytes {
		return fmt.Errorf("%w: %s of %d bytes; 1-%d", ErrBadCommand, c.Op, len(c.Authority), maxAuthorityBytes)
	}
	return nil
}
