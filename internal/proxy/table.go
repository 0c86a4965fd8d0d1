// Package proxy is the public front door of every node: it routes
// <id>.<base-domain> on each public port to wherever the workload runs.
package proxy

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Route says where one workload's public ports lead.
type Route struct {
	ID string
	// Targets maps a public port to the workload's "ip:port".
	Targets map[uint16]string
	// Ready is false while the workload starts; requests then get 503.
	Ready bool
}

// Table is the routing table. Reads take no lock, because every request
// reads it and routes change only when workloads start or stop.
type Table struct {
	mu     sync.Mutex // serializes writers
	routes atomic.Pointer[map[string]*Route]
}

// NewTable returns an empty table.
func NewTable() *Table {
	t := &Table{}
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

func (t *Table) write(fn func(map[string]*Route)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	next := maps.Clone(*t.routes.Load())
	fn(next)
	t.routes.Store(&next)
}
