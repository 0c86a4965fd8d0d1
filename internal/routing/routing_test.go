package routing

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

var webPorts = []spec.Port{
	{Public: 80, Target: 8080, Proto: spec.ProtoHTTP},
	{Public: 5432, Target: 5432, Proto: spec.ProtoTCP},
}

func wl(node string, desired workload.Desired, o workload.Observation, ports []spec.Port) workload.Workload {
	a := workload.Allocation{ID: spec.NewID(), Node: node, Desired: desired, Generation: 1, Spec: spec.Spec{Ports: ports}}
	o.Node = node
	return workload.Join(a, &o)
}

func running(ip string, ready bool) workload.Observation {
	return workload.Observation{State: workload.StateRunning, IP: ip, Pid: 42, Ready: ready}
}

var errDial = errors.New("dialled through a peer")

func derive(ws ...workload.Workload) map[string]proxy.Route {
	routes := Derive(Input{
		Self: "a", Workloads: ws,
		Alive: func(n string) bool { return n != "down" },
		Dial: func(node string) DialFunc {
			return func(context.Context, string) (net.Conn, error) { return nil, errDial }
		},
	})
	out := map[string]proxy.Route{}
	for _, r := range routes {
		out[r.ID] = r
	}
	return out
}

func TestDeriveLocalRunning(t *testing.T) {
	w := wl("a", workload.DesiredRunning, running("10.77.0.5", true), webPorts)
	r, ok := derive(w)[string(w.ID)]
	if !ok {
		t.Fatal("no route for a running local workload")
	}
	if !r.Ready || r.Via != "" || r.Dial != nil {
		t.Fatalf("local route: ready=%v via=%q dial=%v", r.Ready, r.Via, r.Dial != nil)
	}
	if r.HTTP[80] != "10.77.0.5:8080" || r.TCP[5432] != "10.77.0.5:5432" || len(r.HTTP) != 1 || len(r.TCP) != 1 {
		t.Fatalf("targets: http %v tcp %v", r.HTTP, r.TCP)
	}
}

func TestDeriveNotReadyYet(t *testing.T) {
	w := wl("a", workload.DesiredRunning, running("10.77.0.5", false), webPorts)
	if r := derive(w)[string(w.ID)]; r.Ready || r.HTTP[80] != "10.77.0.5:8080" {
		t.Fatalf("a workload whose port does not answer yet must be routed but not ready: %+v", r)
	}
}

func TestDeriveRemoteGoesThroughItsNode(t *testing.T) {
	w := wl("b", workload.DesiredRunning, running("10.77.0.5", true), webPorts)
	r := derive(w)[string(w.ID)]
	if r.Via != "b" || r.Dial == nil || !r.Ready || r.HTTP[80] != "10.77.0.5:8080" {
		t.Fatalf("remote route: %+v", r)
	}
	if _, err := r.Dial(context.Background(), "x"); !errors.Is(err, errDial) {
		t.Fatalf("the route's Dial is not the peer's: %v", err)
	}
}

// A workload that exists but has no address to lead to answers 503, not
// 404: being placed, starting, or on a node that is down.
func TestDeriveUnreachableIs503(t *testing.T) {
	cases := map[string]workload.Workload{
		"pending":  wl("a", workload.DesiredRunning, workload.Observation{State: workload.StatePending}, webPorts),
		"creating": wl("b", workload.DesiredRunning, workload.Observation{State: workload.StateCreating}, webPorts),
		// Restarting after a crash: an address and ready from before must
		// not lead anywhere while the state says creating.
		"creating again": wl("b", workload.DesiredRunning, workload.Observation{State: workload.StateCreating, IP: "10.77.0.9", Ready: true}, webPorts),
		"node down":      wl("down", workload.DesiredRunning, running("10.77.0.5", true), webPorts),
		"unobserved":     workload.Join(workload.Allocation{ID: spec.NewID(), Node: "b", Desired: workload.DesiredRunning, Spec: spec.Spec{Ports: webPorts}}, nil),
		"report moved":   workload.Join(workload.Allocation{ID: spec.NewID(), Node: "b", Desired: workload.DesiredRunning, Spec: spec.Spec{Ports: webPorts}}, &workload.Observation{Node: "a", State: workload.StateRunning, IP: "10.77.0.9"}),
	}
	for name, w := range cases {
		r, ok := derive(w)[string(w.ID)]
		if !ok {
			t.Errorf("%s: no route (the URL would answer 404)", name)
			continue
		}
		if r.Ready || len(r.TCP) != 0 || len(r.HTTP) != 1 || r.HTTP[80] != "" {
			t.Errorf("%s: want a not-ready route with no targets, got %+v", name, r)
		}
	}
}

// A workload whose process died keeps its last address: nothing listens
// there, so its URL answers 502.
func TestDeriveExitedLeadsToItsLastAddress(t *testing.T) {
	w := wl("a", workload.DesiredRunning, workload.Observation{State: workload.StateExited, IP: "10.77.0.5", ExitCode: 1}, webPorts)
	r := derive(w)[string(w.ID)]
	if !r.Ready || r.HTTP[80] != "10.77.0.5:8080" {
		t.Fatalf("exited route: %+v", r)
	}
}

func TestDeriveNoRoute(t *testing.T) {
	stopped := wl("a", workload.DesiredStopped, workload.Observation{State: workload.StateStopped}, webPorts)
	stopping := wl("a", workload.DesiredStopped, running("10.77.0.5", true), webPorts)
	noPorts := wl("a", workload.DesiredRunning, running("10.77.0.5", true), nil)
	if got := derive(stopped, stopping, noPorts); len(got) != 0 {
		t.Fatalf("routes for stopped or portless workloads: %+v", got)
	}
}

func TestSyncerChangesOnlyWhatDiffers(t *testing.T) {
	table := proxy.NewTable()
	s := NewSyncer(table)
	a := wl("a", workload.DesiredRunning, running("10.77.0.5", true), webPorts)
	b := wl("a", workload.DesiredRunning, running("10.77.0.6", false), webPorts)
	s.Apply(Derive(Input{Self: "a", Workloads: []workload.Workload{a, b}}))
	ra, ok1 := table.Lookup(string(a.ID))
	rb, ok2 := table.Lookup(string(b.ID))
	if !ok1 || !ok2 || table.Len() != 2 {
		t.Fatalf("table after first sync: %d routes", table.Len())
	}
	b.Observed.Ready = true
	s.Apply(Derive(Input{Self: "a", Workloads: []workload.Workload{a, b}}))
	if again, _ := table.Lookup(string(a.ID)); again != ra {
		t.Fatal("an unchanged route was written again")
	}
	if again, _ := table.Lookup(string(b.ID)); again == rb || !again.Ready {
		t.Fatal("a changed route was not written")
	}
	s.Apply(Derive(Input{Self: "a", Workloads: []workload.Workload{b}}))
	if _, ok := table.Lookup(string(a.ID)); ok || table.Len() != 1 {
		t.Fatal("the route of a workload that is gone stayed")
	}
}

// TestSyncerSyncAppliesWhatDeriveReturns applies a derivation, then one
// that reports failure: the table keeps the routes of the first.
func TestSyncerSyncAppliesWhatDeriveReturns(t *testing.T) {
	table := proxy.NewTable()
	s := NewSyncer(table)
	a := wl("a", workload.DesiredRunning, running("10.77.0.5", true), webPorts)
	s.Sync(func() ([]proxy.Route, bool) {
		return Derive(Input{Self: "a", Workloads: []workload.Workload{a}}), true
	})
	if _, ok := table.Lookup(string(a.ID)); !ok || table.Len() != 1 {
		t.Fatalf("after a derivation: %d routes, want the workload's", table.Len())
	}
	s.Sync(func() ([]proxy.Route, bool) { return nil, false })
	if _, ok := table.Lookup(string(a.ID)); !ok {
		t.Fatal("a derivation that failed took the routes away")
	}
}
