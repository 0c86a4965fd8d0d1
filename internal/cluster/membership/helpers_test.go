package membership

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// All gossip in these tests stays on 127.0.0.1, with ports picked by the
// kernel so that tests cannot collide.

// converge is how long a test waits for gossip to settle. It is a deadline,
// not an expectation: on a quiet machine everything settles within a few
// seconds.
const converge = 30 * time.Second

func key(b byte) []byte { return bytes.Repeat([]byte{b}, GossipKeySize) }

// testLog sends logs to t.Log until the test ends; serf goroutines can
// outlive a test by a moment, and t.Log would panic then.
func testLog(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func workerTags(name string) Tags {
	return Tags{
		Role:          RoleWorker,
		Cores:         4,
		MemoryMiB:     8192,
		FreeMemoryMiB: 6000,
		Public:        name == "b",
		APIAddr:       name + ".cluster.test:8443",
		RPCAddr:       name + ".cluster.test:8444",
		PortMin:       30000,
		PortMax:       32767,
		Isolations:    []string{"container", "gvisor"},
	}
}

func testConfig(t *testing.T, name string, gossipKey []byte) Config {
	return Config{
		NodeName:    name,
		BindAddr:    "127.0.0.1:0",
		GossipKey:   gossipKey,
		KeyringFile: filepath.Join(t.TempDir(), "serf", "keyring"),
		Tags:        workerTags(name),
		Log:         testLog(t),
		FastFailure: true,
	}
}

// start starts a node and shuts it down when the test ends.
func start(t *testing.T, cfg Config) *Membership {
	t.Helper()
	m, err := Start(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.NodeName, err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

func addr(m *Membership) string { return m.LocalMember().Addr }

func join(t *testing.T, m *Membership, others ...*Membership) {
	t.Helper()
	var addrs []string
	for _, o := range others {
		addrs = append(addrs, addr(o))
	}
	if _, err := m.Join(addrs); err != nil {
		t.Fatalf("%s joins: %v", m.Name(), err)
	}
}

// waitFor polls cond until it holds or the deadline passes; cond returns
// a description of what it saw, for the failure message.
func waitFor(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(converge)
	var saw string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, saw = cond(); ok {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not after %v; last saw %s", what, converge, saw)
}

func member(m *Membership, name string) (Member, bool) {
	for _, x := range m.Members() {
		if x.Name == name {
			return x, true
		}
	}
	return Member{}, false
}

func describe(ms []Member) string {
	var b strings.Builder
	for _, x := range ms {
		fmt.Fprintf(&b, "%s(%s %s) ", x.Name, x.Addr, x.State)
	}
	return b.String()
}

// waitState waits until m sees name in state.
func waitState(t *testing.T, m *Membership, name string, state State) Member {
	t.Helper()
	var got Member
	waitFor(t, fmt.Sprintf("%s sees %s %s", m.Name(), name, state), func() (bool, string) {
		x, ok := member(m, name)
		got = x
		return ok && x.State == state, describe(m.Members())
	})
	return got
}

// waitAlive waits until m sees exactly names, all alive.
func waitAlive(t *testing.T, m *Membership, names ...string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s sees %v alive", m.Name(), names), func() (bool, string) {
		ms := m.Members()
		if len(ms) != len(names) {
			return false, describe(ms)
		}
		for i, x := range ms {
			if x.Name != names[i] || x.State != StateAlive {
				return false, describe(ms)
			}
		}
		return true, ""
	})
}

// waitEvent reads m's events until one matches.
func waitEvent(t *testing.T, m *Membership, typ EventType, name string) Event {
	t.Helper()
	timeout := time.After(converge)
	for {
		select {
		case ev, ok := <-m.Events():
			if !ok {
				t.Fatalf("%s: events closed before %s of %s", m.Name(), typ, name)
			}
			if ev.Type == typ && ev.Member.Name == name {
				return ev
			}
		case <-timeout:
			t.Fatalf("%s: no %s event for %s after %v", m.Name(), typ, name, converge)
		}
	}
}
