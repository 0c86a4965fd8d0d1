package node

import (
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

func TestRestartBackoffDoublesUpToItsCap(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute}
	for n, w := range want {
		if got := restartBackoff(n, time.Second); got != w {
			t.Errorf("backoff before restart %d = %v, want %v", n+1, got, w)
		}
	}
	if got := restartBackoff(50, time.Hour); got != restartBackoffMin {
		t.Errorf("backoff after a long run = %v, want %v", got, restartBackoffMin)
	}
}

// TestOnFailureRestartsUpToItsMaximum runs a workload that fails at once
// with restart on-failure:2 and checks that its node starts it again
// twice, counting, and then leaves it exited.
func TestOnFailureRestartsUpToItsMaximum(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	n.restartWait = func(time.Duration) time.Duration { return 10 * time.Millisecond }
	w := n.spawn(`{"restart":"on-failure:2","args":["sh","-c","sleep 0.2; exit 5"]}`)
	testutil.WaitFor(t, waitLimit, "two restarts and a last exit", func() bool {
		o, ok := n.Observation(w.ID)
		return ok && o.State == workload.StateExited && o.Restarts == 2
	})
	time.Sleep(10 * e.cfg.StatusInterval)
	o, _ := n.Observation(w.ID)
	if o.State != workload.StateExited || o.Restarts != 2 || o.ExitCode == 0 {
		t.Fatalf("after on-failure:2 ran out: %+v, want exited after 2 restarts with a non-zero code", o)
	}
	if r, err := n.record(w.ID); err != nil || r.Restarts != 2 {
		t.Fatalf("record %+v %v, want 2 restarts kept", r, err)
	}
	running := 0
	for _, s := range n.reports.states(w.ID) {
		if s == workload.StateRunning {
			running++
		}
	}
	if running != 3 {
		t.Errorf("reported running %d times, want 3 (the start and 2 restarts): %v", running, n.reports.states(w.ID))
	}

	// A stopped workload is not restarted; start runs it again with a
	// fresh count.
	if _, err := n.Stop(ctx(t), w.ID, 0); err != nil {
		t.Fatal(err)
	}
	a := n.alloc(e.request(`{"restart":"on-failure:2","args":["sh","-c","sleep 0.2; exit 5"]}`).Spec)
	a.ID, a.Generation = w.ID, 3
	o, err := n.StartAgain(ctx(t), a)
	if err != nil || o.State != workload.StateRunning || o.Restarts != 0 || o.Generation != 3 {
		t.Fatalf("StartAgain: %+v %v, want running, generation 3, restarts 0", o, err)
	}
	n.removeAll()
}

// TestNoRestartPolicyLeavesItExited checks the default: an exit is final.
func TestNoRestartPolicyLeavesItExited(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	n.restartWait = func(time.Duration) time.Duration { return 10 * time.Millisecond }
	w := n.spawn(`{"args":["sh","-c","exit 5"]}`)
	testutil.WaitFor(t, waitLimit, "the exit", func() bool {
		o, ok := n.Observation(w.ID)
		return ok && o.State == workload.StateExited
	})
	time.Sleep(10 * e.cfg.StatusInterval)
	if o, _ := n.Observation(w.ID); o.State != workload.StateExited || o.Restarts != 0 {
		t.Fatalf("%+v, want exited and never restarted", o)
	}
	n.removeAll()
}

// TestRestartPolicyOutlivesTheDaemon: a workload that exited while its
// restart was still waiting out its backoff when the daemon stopped is
// started again by the next daemon, with its count kept.
func TestRestartPolicyOutlivesTheDaemon(t *testing.T) {
	if isolated(t) {
		return
	}
	e := newEnv(t)
	n := e.start()
	n.restartWait = func(time.Duration) time.Duration { return time.Hour }
	w := n.spawn(`{"restart":"always","args":["sh","-c","sleep 0.3; exit 0"]}`)
	testutil.WaitFor(t, waitLimit, "the exit", func() bool {
		o, ok := n.Observation(w.ID)
		return ok && o.State == workload.StateExited
	})
	n.shutdown()

	n2 := e.start()
	// The first daemon's restart never ran. The second schedules its own
	// at Start, before a test could shorten it: the real backoff applies.
	testutil.WaitFor(t, waitLimit, "a restart by the new daemon", func() bool {
		o, ok := n2.Observation(w.ID)
		return ok && o.Restarts >= 1
	})
	n2.removeAll()
}
