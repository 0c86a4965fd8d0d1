package gvisor

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/hypercore-dev/hypercore/internal/driver"
)

// guardTable names the nftables table the driver puts in each workload's
// network namespace.
const guardTable = "hypercore-gvisor"

// With --network=sandbox, runsc reads the addresses and routes of the
// netns's interfaces, serves them from gVisor's own network stack through
// packet sockets, and takes the addresses off the host's interfaces so that
// the host kernel does not answer for them too. Anything that puts an
// address back breaks the workload's network: the node does, when a
// restarted daemon adopts a running workload and repairs its veth (node
// Recover, network Adopt), and the host kernel then resets every TCP
// connection to the workload before gVisor can accept it.
//
// guardNetNS makes that harmless: a table in the workload's netns drops
// everything the host kernel's own stack there would receive or send.
// Packet sockets see frames before netfilter and send past it, so gVisor's
// traffic is not touched, and nothing of the host listens in that netns.

// Create creates the workload as the container driver does, refusing a
// terminal (see the package doc) before anything is made, and guards its
// network namespace.
func (d *Driver) Create(ctx context.Context, cfg driver.Config) error {
	if cfg.Spec.Tty {
		return fmt.Errorf("create %s: a workload with a terminal (tty) cannot run in gVisor; spawn it without tty, or with isolation container", cfg.ID)
	}
	if err := d.Driver.Create(ctx, cfg); err != nil {
		return err
	}
	if err := guardNetNS(d.netnsPath(cfg)); err != nil {
		_ = d.Driver.Delete(context.WithoutCancel(ctx), cfg.ID)
		return fmt.Errorf("create %s: %w", cfg.ID, err)
	}
	return nil
}

// Run creates and starts the workload as the container driver does, in
// one `runsc run --detach`, refusing a terminal, and then guards its
// network namespace. By then runsc has moved the workload's address from
// the host's stack to gVisor's, and the guard is for whatever puts it back
// later (see above).
func (d *Driver) Run(ctx context.Context, cfg driver.Config) error {
	if cfg.Spec.Tty {
		return fmt.Errorf("run %s: a workload with a terminal (tty) cannot run in gVisor; spawn it without tty, or with isolation container", cfg.ID)
	}
	if err := d.Driver.Run(ctx, cfg); err != nil {
		return err
	}
	if err := guardNetNS(d.netnsPath(cfg)); err != nil {
		_ = d.Driver.Delete(context.WithoutCancel(ctx), cfg.ID)
		return fmt.Errorf("run %s: %w", cfg.ID, err)
	}
	return nil
}

// Recover recovers the workload as the container driver does, and puts
// the guard back if its network namespace lost it. A running sandbox's
// namespace is reached through its process: a daemon restarted in another
// mount namespace (as `ip netns exec` makes) no longer sees the bind mount
// it was given. A stopped workload's namespace is guarded only if the bind
// mount is visible; otherwise Create's guard is still in it.
func (d *Driver) Recover(ctx context.Context, cfg driver.Config) (driver.Status, error) {
	st, err := d.Driver.Recover(ctx, cfg)
	if err != nil {
		return st, err
	}
	path := d.netnsPath(cfg)
	if st.State == driver.StateRunning && st.Pid > 0 {
		path = fmt.Sprintf("/proc/%d/ns/net", st.Pid)
	} else if !isNetNS(path) {
		return st, nil
	}
	if err := guardNetNS(path); err != nil {
		return st, fmt.Errorf("recover %s: %w", cfg.ID, err)
	}
	return st, nil
}

// isNetNS reports whether path is a namespace file (nsfs), rather than the
// empty mount point a bind mount leaves in another mount namespace.
func isNetNS(path string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(path, &fs) == nil && fs.Type == unix.NSFS_MAGIC
}

// netnsPath is the network namespace the workload runs in: the node's, or
// the one the container driver made for it.
func (d *Driver) netnsPath(cfg driver.Config) string {
	if cfg.Network.NetNSPath != "" {
		return cfg.Network.NetNSPath
	}
	return filepath.Join(d.dir, cfg.ID.String(), "netns")
}

// guardNetNS replaces the guard table in the netns at path, in one
// transaction.
func guardNetNS(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("guard network namespace: %w", err)
	}
	defer f.Close()
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		return fmt.Errorf("guard network namespace %s: open nftables: %w", path, err)
	}
	t := &nftables.Table{Name: guardTable, Family: nftables.TableFamilyINet}
	// Add-then-delete makes the delete valid when the table is absent.
	c.AddTable(t)
	c.DelTable(t)
	t = c.AddTable(t)
	drop := nftables.ChainPolicyDrop
	for name, hook := range map[string]*nftables.ChainHook{"input": nftables.ChainHookInput, "output": nftables.ChainHookOutput} {
		c.AddChain(&nftables.Chain{
			Name:     name,
			Table:    t,
			Type:     nftables.ChainTypeFilter,
			Hooknum:  hook,
			Priority: nftables.ChainPriorityRaw,
			Policy:   &drop,
		})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("guard network namespace %s: add nftables table inet %s (is nf_tables with the inet family available?): %w", path, guardTable, err)
	}
	return nil
}
