// Package proxy is the public front door of every node: it routes
// <id>.<base-domain> on the HTTP(S) ports, and raw TCP on any other public
// port, to wherever the workload runs.
package proxy

import (
	"context"
	"maps"
	"net"
	"sync"
	"sync/atomic"
)

// Route says where one workload's public ports lead.
type Route struct {
	// ID is the workload's id: <ID>.<base> is its host name.
	ID string
	// HTTP maps a public port served by the HTTP(S) proxy (80, 443) to the
	// workload's "ip:port". Many workloads share these ports; the Host
	// header tells them apart.
	HTTP map[uint16]string
	// TCP maps a public port forwarded as raw TCP to the workload's
	// "ip:port". Raw TCP carries no name, so one workload owns the port.
	TCP map[uint16]string
	// Ready is false while the workload starts; HTTP requests then get 503.
	Ready bool
	// Via names the node the workload runs on when that is not this node,
	// and "" when it is. Workload addresses are private to their node, and
	// two nodes may hand out the same ones: kept-alive connections are
	// pooled by Via and address together, never by address alone.
	Via string
	// Dial connects to one of the route's addresses ("ip:port"), for a
	// workload this node cannot reach directly (a tunnel through Via).
	// Nil dials plain TCP. The HTTP paths and the raw TCP forwarder all
	// use it; the connection it returns should pass a half-close
	// (CloseWrite) and honour deadlines, as a *net.TCPConn does.
	Dial func(ctx context.Context, target string) (net.Conn, error)
}

// Table is the routing table. Reads take no lock, because every request
// reads it and routes change only when workloads start or stop.
type Table struct {
	mu       sync.Mutex // serializes writers, the watcher and reservations
	routes   atomic.Pointer[map[string]*Route]
	reserved map[uint16]string
	watcher  watcher
}

// watcher acts on route changes outside the HTTP path: the TCP forwarder
// opens and closes listeners with it.
type watcher interface {
	// routesChanged runs under the writer lock, so changes arrive in
	// order and Set returns only after the watcher has acted on them.
	routesChanged(routes map[string]*Route, reserved map[uint16]string)
	// portOwner says whether something outside hypercore holds port.
	portOwner(port uint16) (owner string, taken bool)
}

// NewTable returns an empty table.
func NewTable() *Table {
	t := &Table{reserved: map[uint16]string{}}
	empty := map[string]*Route{}
	t.routes.Store(&empty)
	return t
}

// Lookup returns the route of workload id.
func (t *Table) Lookup(id string) (*Route, bool) {
	r, ok := (*t.routes.Load())[id]
	return r, ok
}

// Set adds or replaces the route of r.ID.
func (t *Table) Set(r Route) {
	t.write(func(m map[string]*Route) { m[r.ID] = &r })
}

// Delete removes the route of id, if any.
func (t *Table) Delete(id string) {
	t.write(func(m map[string]*Route) { delete(m, id) })
}

// Len returns how many routes there are.
func (t *Table) Len() int { return len(*t.routes.Load()) }

// Reserve marks a public port as used by the daemon itself (the HTTP
// proxy, the API), so no workload is given it as a raw TCP port.
func (t *Table) Reserve(port uint16, owner string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.reserved[port] = owner
	if t.watcher != nil {
		t.watcher.routesChanged(*t.routes.Load(), t.reserved)
	}
}

// PortOwner says who, other than a workload, holds a public TCP port: a
// listener of the daemon, or another program found by a test bind. Which
// workload holds a port is the placer's business: it knows the workloads
// that are placed but not yet routed.
func (t *Table) PortOwner(port uint16) (owner string, taken bool) {
	t.mu.Lock()
	owner, taken = t.reserved[port]
	w := t.watcher
	t.mu.Unlock()
	if taken || w == nil {
		return owner, taken
	}
	return w.portOwner(port)
}

// setWatcher makes w see every change from now on, starting with the
// current routes.
func (t *Table) setWatcher(w watcher) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.watcher = w
	if w != nil {
		w.routesChanged(*t.routes.Load(), t.reserved)
	}
}

func (t *Table) write(fn func(map[string]*Route)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	next := maps.Clone(*t.routes.Load())
	fn(next)
	t.routes.Store(&next)
	if t.watcher != nil {
		t.watcher.routesChanged(next, t.reserved)
	}
}
