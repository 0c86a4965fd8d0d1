package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/raftstore"
	"github.com/hypercore-dev/hypercore/internal/cluster/sealed"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// ErrSecretMissing means a workload names a secret the cluster does not
// hold. It is a spec.FieldError on "secrets", so the API answers 400 and
// the spawn is not tried on another node.
var ErrSecretMissing = errors.New("secret not set")

// secretWait bounds how long a start waits for a secret set through
// another node to reach this node's copy of the state.
const secretWait = 5 * time.Second

// box returns the cluster's sealing box, made from the cluster key.
func (c *Cluster) box() (*sealed.Box, error) {
	c.boxOnce.Do(func() { c.sealBox, c.sealErr = sealed.New(c.mat.GossipKey) })
	return c.sealBox, c.sealErr
}

// SetSecret seals value with the cluster key and records it in the
// cluster state under name, replacing a secret of that name. Only the
// sealed value goes into raft. Workloads already running keep the value
// they started with.
func (c *Cluster) SetSecret(name string, value []byte) error {
	if err := spec.ValidateSecretName(name); err != nil {
		return err
	}
	if err := spec.ValidateSecretValue(value); err != nil {
		return err
	}
	b, err := c.box()
	if err != nil {
		return err
	}
	return c.raft.SetSecret(raftstore.Secret{Name: name, Sealed: b.Seal(name, value), UpdatedAt: time.Now().UTC()})
}

// Secrets lists the cluster's secrets by name.
func (c *Cluster) Secrets() []sealed.Info {
	list := c.raft.Secrets()
	out := make([]sealed.Info, len(list))
	for i, s := range list {
		out[i] = sealed.Info{Name: s.Name, UpdatedAt: s.UpdatedAt}
	}
	return out
}

// RemoveSecret removes a secret. Workloads that name it keep running with
// the value they started with; they cannot start again until it is set.
func (c *Cluster) RemoveSecret(name string) error {
	if err := spec.ValidateSecretName(name); err != nil {
		return err
	}
	return c.raft.RemoveSecret(name)
}

// secretValues opens the secrets s names, from this node's copy of the
// state, by secret name: the node's Config.Secrets. It runs only on
// the node that runs the workload, so the values never cross the network
// in the clear (the sealed values reach every server through raft, over
// mutual TLS). A secret set through another node a moment ago may not be
// here yet, so a missing one is waited for a little.
func (c *Cluster) secretValues(ctx context.Context, s spec.Spec) (map[string][]byte, error) {
	b, err := c.box()
	if err != nil {
		return nil, err
	}
	values := make(map[string][]byte, len(s.Secrets))
	for key, name := range s.Secrets {
		sec, ok := c.raft.Secret(name)
		for deadline := time.Now().Add(secretWait); !ok && time.Now().Before(deadline); {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			sec, ok = c.raft.Secret(name)
		}
		if !ok {
			return nil, &spec.FieldError{Field: "secrets", Msg: fmt.Sprintf("%s names secret %q, which is not set; set it with `hypercore secret set %s` (%v)", key, name, name, ErrSecretMissing)}
		}
		v, err := b.Open(name, sec.Sealed)
		if err != nil {
			return nil, err
		}
		values[name] = v
	}
	return values, nil
}

// checkSecrets refuses a spawn that names a secret the cluster does not
// hold, before anything is placed.
func (c *Cluster) checkSecrets(s spec.Spec) error {
	for key, name := range s.Secrets {
		if _, ok := c.raft.Secret(name); !ok {
			return &spec.FieldError{Field: "secrets", Msg: fmt.Sprintf("%s names secret %q, which is not set; set it with `hypercore secret set %s`", key, name, name)}
		}
	}
	return nil
}
