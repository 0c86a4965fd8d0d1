package raftstore

import (
	"errors"
	"fmt"
	"sort"

	"github.com/hypercore-dev/hypercore/internal/apitoken"
)

// ErrTokenNotFound is the result of revoking a token the state does not
// hold.
var ErrTokenNotFound = errors.New("no such API token")

// ErrTooManyTokens is the result of adding a token beyond
// apitoken.MaxTokens.
var ErrTooManyTokens = fmt.Errorf("the cluster holds %d API tokens already; revoke some first", apitoken.MaxTokens)

// The token ops: the records are the API's scoped tokens, kept hashed.
const (
	// opPutToken adds a token record.
	opPutToken = "put-token"
	// opRevokeToken deletes one by id; every node's copy loses it as it
	// applies the entry.
	opRevokeToken = "revoke-token"
)

// checkToken is command.check for the token ops: the record must be one
// apitoken.New could have made.
func (c *command) checkToken() error {
	if c.Token == nil {
		return fmt.Errorf("%w: %s without a token", ErrBadCommand, c.Op)
	}
	if c.Op == opRevokeToken {
		if err := apitoken.CheckID(c.Token.ID); err != nil {
			return fmt.Errorf("%w: %s: %v", ErrBadCommand, c.Op, err)
		}
		return nil
	}
	if err := c.Token.Check(); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadCommand, c.Op, err)
	}
	return nil
}

// applyToken applies a token op; the caller holds f.mu.
func (f *fsm) applyToken(c command) error {
	switch c.Op {
	case opPutToken:
		if _, ok := f.tokens[c.Token.ID]; ok {
			return fmt.Errorf("API token %s exists already", c.Token.ID)
		}
		if len(f.tokens) >= apitoken.MaxTokens {
			return ErrTooManyTokens
		}
		f.tokens[c.Token.ID] = *c.Token
	case opRevokeToken:
		if _, ok := f.tokens[c.Token.ID]; !ok {
			return fmt.Errorf("%w: %s", ErrTokenNotFound, c.Token.ID)
		}
		delete(f.tokens, c.Token.ID)
	}
	return nil
}

// PutToken adds an API token record to the cluster state.
func (s *Store) PutToken(t apitoken.Token) error {
	_, err := s.apply(command{Op: opPutToken, Token: &t})
	return err
}

// RevokeToken deletes an API token from the cluster state; ErrTokenNotFound
// if there is none with that id.
func (s *Store) RevokeToken(id string) error {
	_, err := s.apply(command{Op: opRevokeToken, Token: &apitoken.Token{ID: id}})
	return err
}

// Token returns the record of token id from this node's copy.
func (s *Store) Token(id string) (apitoken.Token, bool) {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	t, ok := s.fsm.tokens[id]
	return t, ok
}

// Tokens lists every token record, oldest first.
func (s *Store) Tokens() []apitoken.Token {
	s.fsm.mu.RLock()
	out := make([]apitoken.Token, 0, len(s.fsm.tokens))
	for _, t := range s.fsm.tokens {
		out = append(out, t)
	}
	s.fsm.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}
