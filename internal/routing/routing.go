// Package routing derives the proxy's routes from the workloads' allocations
// and observations. It is the one writer of a node's proxy table: local and
// remote workloads are routed by the same rules, so what a URL answers
// depends only on the cluster state, not on which node is asked.
package routing

import (
	"context"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// DialFunc reaches target ("ip:port", an address on another node's
// workload bridge) through that node.
type DialFunc = func(ctx context.Context, target string) (net.Conn, error)

// Input is what the routes are derived from.
type Input struct {
	// Self is this node's name: its workloads are dialled directly.
	Self string
	// Workloads are the allocations joined with their observations.
	Workloads []workload.Workload
	// Alive says whether gossip sees a node up. A workload on a node that
	// is down is being moved, not gone.
	Alive func(node string) bool
	// Dial returns how to reach workloads hosted on node.
	Dial func(node string) DialFunc
}

// Derive returns the route of every workload that should have one:
//   - a workload meant to run with published ports has a route, so its URL
//     never answers 404 while it exists;
//   - running on a live node: the route leads to its address, ready once
//     its node says the first port accepts connections;
//   - exited (its process ended by itself): the route leads to its last
//     address, where nothing listens, so its URL answers 502;
//   - pending, starting, or on a node that is down: no address, not
//     ready, so its URL answers 503 (try again) while it is placed.
func Derive(in Input) []proxy.Route {
	var out []proxy.Route
	for _, w := range in.Workloads {
		ports := w.Ports()
		if w.Desired != workload.DesiredRunning || len(ports) == 0 {
			continue
		}
		r := proxy.Route{ID: string(w.ID), HTTP: map[uint16]string{}, TCP: map[uint16]string{}}
		o := w.Observed
		remote := w.Node != in.Self
		up := !remote || in.Alive == nil || in.Alive(w.Node)
		addr, ok := parseIP(o.IP)
		reachable := up && ok && (o.State == workload.StateRunning || o.State == workload.StateExited)
		if !reachable {
			for _, p := range ports {
				if p.Proto != spec.ProtoTCP {
					r.HTTP[p.Public] = ""
				}
			}
			out = append(out, r)
			continue
		}
		// An exited workload is "ready": the proxy dials its last address
		// and answers 502 when nothing is there.
		r.Ready = o.Ready || o.State == workload.StateExited
		if remote {
			r.Via = w.Node
			if in.Dial != nil {
				r.Dial = in.Dial(w.Node)
			}
		}
		for _, p := range ports {
			target := net.JoinHostPort(addr.String(), strconv.Itoa(int(p.Target)))
			if p.Proto == spec.ProtoTCP {
				r.TCP[p.Public] = target
			} else {
				r.HTTP[p.Public] = target
			}
		}
		out = append(out, r)
	}
	return out
}

func parseIP(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	return a, err == nil
}

// Syncer applies derived routes to a proxy table, which it alone writes.
// It changes only the routes that differ, so connections and listeners of
// unchanged routes are left alone. Its lock also orders the derivations
// given to Sync.
type Syncer struct {
	table *proxy.Table
	mu    sync.Mutex
	last  map[string]proxy.Route
}

// NewSyncer returns the writer of table.
func NewSyncer(table *proxy.Table) *Syncer {
	return &Syncer{table: table, last: map[string]proxy.Route{}}
}

// Apply makes the table hold exactly routes.
func (s *Syncer) Apply(routes []proxy.Route) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apply(routes)
}

// Sync calls derive and applies the routes it returns, one Sync or Apply
// at a time, so a derivation that read an older state is never applied
// after a newer one (which would take away a route just made). derive
// returns false to leave the table as it is.
func (s *Syncer) Sync(derive func() ([]proxy.Route, bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if routes, ok := derive(); ok {
		s.apply(routes)
	}
}

func (s *Syncer) apply(routes []proxy.Route) {
	next := make(map[string]proxy.Route, len(routes))
	for _, r := range routes {
		next[r.ID] = r
		if cur, ok := s.last[r.ID]; !ok || !Same(cur, r) {
			s.table.Set(r)
		}
	}
	for id := range s.last {
		if _, ok := next[id]; !ok {
			s.table.Delete(id)
		}
	}
	s.last = next
}

// Same reports whether two routes lead to the same places in the same
// state. Dial functions are not compared: a route's Via names the node
// they reach.
func Same(a, b proxy.Route) bool {
	return a.ID == b.ID && a.Ready == b.Ready && a.Via == b.Via &&
		maps.Equal(a.HTTP, b.HTTP) && maps.Equal(a.TCP, b.TCP)
}
