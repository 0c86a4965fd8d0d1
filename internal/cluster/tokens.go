package cluster

import (
	"errors"
	"fmt"

	"github.com/hypercore-dev/hypercore/internal/apitoken"
	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// CreateToken implements server.TokenStore: the record goes into the
// cluster state through the raft leader, so every node honours it.
func (c *Cluster) CreateToken(t apitoken.Token) error {
	return tokenWriteErr(c.raft.PutToken(t))
}

// RevokeToken implements server.TokenStore. The revocation is a raft
// entry: each node stops accepting the token as it applies it, which is
// within milliseconds on a healthy cluster.
func (c *Cluster) RevokeToken(id string) error {
	if _, ok := c.raft.Token(id); !ok {
		return apitoken.ErrNotFound
	}
	err := c.raft.RevokeToken(id)
	if errors.Is(err, raftstore.ErrTokenNotFound) {
		return apitoken.ErrNotFound
	}
	return tokenWriteErr(err)
}

// Tokens implements server.TokenStore, from this node's copy.
func (c *Cluster) Tokens() []apitoken.Token { return c.raft.Tokens() }

// Token implements server.TokenStore, from this node's copy.
func (c *Cluster) Token(id string) (apitoken.Token, bool) { return c.raft.Token(id) }

// tokenWriteErr makes a write that found no leader a 503 for the API.
func tokenWriteErr(err error) error {
	var nl raftstore.ErrNotLeader
	if errors.As(err, &nl) {
		return fmt.Errorf("%w: no raft leader to write the token through: %v", workload.ErrUnreachable, err)
	}
	return err
}
