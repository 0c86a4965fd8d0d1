package cluster

import (
	"path/filepath"
	"time"

	"github.com/hypercore-dev/hypercore/internal/cluster/pki"
)

// authorityName is the additional data the authority is sealed under, so
// it cannot be mistaken for a secret.
const authorityName = "cluster-authority"

// shareAuthority, on the node that made the CA, seals the CA key and join
// secret with the cluster key and records them in the cluster state
// (once), so every server can admit new nodes after this one is gone.
func (c *Cluster) shareAuthority() {
	if c.auth == nil {
		return
	}
	if _, ok := c.raft.Authority(); ok {
		return
	}
	b, err := c.box()
	if err != nil {
		c.log.Error("cannot share the cluster authority", "err", err)
		return
	}
	data, err := c.auth.Export()
	if err != nil {
		c.log.Error("cannot share the cluster authority", "err", err)
		return
	}
	if err := c.raft.SetAuthority(b.Seal(authorityName, data)); err != nil {
		c.log.Warn("the cluster authority is not shared yet; trying again at the next start", "err", err)
		return
	}
	c.log.Info("cluster authority shared, sealed, with every server: any server admits new nodes")
}

// takeAuthority, on a server that did not make the CA, waits until the
// cluster state holds the sealed authority, opens it, and from then on
// admits joins on its RPC port, writing a join token naming itself to
// <data-dir>/join-token. Nothing of the authority is written to disk: the
// next start opens it from the state again.
func (c *Cluster) takeAuthority() {
	defer c.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		if c.tryTakeAuthority() {
			return
		}
		select {
		case <-c.quit:
			return
		case <-t.C:
		}
	}
}

func (c *Cluster) tryTakeAuthority() bool {
	sealedAuth, ok := c.raft.Authority()
	if !ok {
		return false
	}
	b, err := c.box()
	if err != nil {
		c.log.Error("cannot open the cluster authority", "err", err)
		return true
	}
	data, err := b.Open(authorityName, sealedAuth)
	if err != nil {
		c.log.Error("cannot open the cluster authority", "err", err)
		return true
	}
	a, err := pki.FromExport(c.mat, data)
	if err != nil {
		c.log.Error("cannot open the cluster authority", "err", err)
		return true
	}
	if err := c.enableJoin(a); err != nil {
		c.log.Error("cannot admit joins", "err", err)
		return true
	}
	if err := a.WriteJoinToken(filepath.Join(c.cfg.DataDir, JoinTokenFile), c.rpcAddr); err != nil {
		c.log.Warn("joins are admitted here, but the join token could not be written", "err", err)
	}
	c.log.Info("this server now admits new nodes too", "join_token_file", filepath.Join(c.cfg.DataDir, JoinTokenFile))
	return true
}
