package raftstore

import (
	"time"

	"github.com/hashicorp/raft"
)

// LastQuorumContact is when this node last knew itself in touch with a
// raft quorum: now on a leader (which steps down after LeaderLeaseTimeout
// without a quorum), else the last time it heard from a leader. Zero if
// it never has.
func (s *Store) LastQuorumContact() time.Time {
	if s.raft.State() == raft.Leader {
		return time.Now()
	}
	return s.raft.LastContact()
}
