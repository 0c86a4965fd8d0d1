package membership

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestThreeMembersJoinAndUpdateTags(t *testing.T) {
	k := key(1)
	acfg := testConfig(t, "a", k)
	acfg.Tags.Role = RoleServer
	a := start(t, acfg)
	b := start(t, testConfig(t, "b", k))
	c := start(t, testConfig(t, "c", k))
	join(t, b, a)
	join(t, c, b) // through a member that joined itself

	want := map[string]Tags{"a": acfg.Tags, "b": workerTags("b"), "c": workerTags("c")}
	for _, m := range []*Membership{a, b, c} {
		waitAlive(t, m, "a", "b", "c")
		for _, x := range m.Members() {
			if x.TagsErr != nil {
				t.Errorf("%s sees %s with bad tags: %v", m.Name(), x.Name, x.TagsErr)
			}
			if !reflect.DeepEqual(x.Tags, want[x.Name]) {
				t.Errorf("%s sees %s with tags %+v, want %+v", m.Name(), x.Name, x.Tags, want[x.Name])
			}
			if !strings.HasPrefix(x.Addr, "127.0.0.1:") {
				t.Errorf("%s sees %s at %q, want 127.0.0.1:port", m.Name(), x.Name, x.Addr)
			}
		}
	}
	waitEvent(t, a, EventJoin, "b")
	waitEvent(t, a, EventJoin, "c")

	nt := workerTags("c")
	nt.FreeMemoryMiB = 1234
	nt.Isolations = []string{"container", "gvisor", "microvm"}
	if err := c.UpdateTags(nt); err != nil {
		t.Fatal(err)
	}
	for _, m := range []*Membership{a, b, c} {
		waitFor(t, m.Name()+" sees c's new tags", func() (bool, string) {
			x, _ := member(m, "c")
			return reflect.DeepEqual(x.Tags, nt), describe(m.Members())
		})
	}
	ev := waitEvent(t, a, EventUpdate, "c")
	if ev.Member.Tags.FreeMemoryMiB != 1234 {
		t.Errorf("update event carries %+v", ev.Member.Tags)
	}

	if err := c.UpdateTags(Tags{Role: "boss"}); err == nil {
		t.Error("UpdateTags accepted an unknown role")
	}
}

func TestDifferentKeyCannotJoin(t *testing.T) {
	a := start(t, testConfig(t, "a", key(1)))
	b := start(t, testConfig(t, "b", key(1)))
	join(t, b, a)
	waitAlive(t, a, "a", "b")

	intruder := start(t, testConfig(t, "x", key(2)))
	n, err := intruder.Join([]string{addr(a), addr(b)})
	if err == nil || n != 0 {
		t.Fatalf("join with a different key: n=%d err=%v, want an error", n, err)
	}
	if !strings.Contains(err.Error(), "gossip key") {
		t.Errorf("join error does not point at the key: %v", err)
	}
	t.Logf("join with a different key: %v", err)
	// Nor can the cluster pull the intruder in.
	if n, err := a.Join([]string{addr(intruder)}); err == nil || n != 0 {
		t.Fatalf("cluster joins node with a different key: n=%d err=%v", n, err)
	}
	for _, m := range []*Membership{a, b} {
		waitAlive(t, m, "a", "b")
	}
	waitAlive(t, intruder, "x")
}

func TestStartRefusesWithoutKey(t *testing.T) {
	for name, k := range map[string][]byte{
		"none":    nil,
		"empty":   {},
		"aes-128": key(1)[:16],
		"long":    append(key(1), 0),
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, "a", k)
			m, err := Start(cfg)
			if err == nil {
				_ = m.Shutdown()
				t.Fatal("Start ran without a valid 32-byte gossip key")
			}
			if !strings.Contains(err.Error(), "gossip key") {
				t.Errorf("error does not say what is wrong: %v", err)
			}
		})
	}
}

func TestStartRefusesBadConfig(t *testing.T) {
	for name, mod := range map[string]func(*Config){
		"no name":     func(c *Config) { c.NodeName = "" },
		"bad name":    func(c *Config) { c.NodeName = "a b" },
		"bad bind":    func(c *Config) { c.BindAddr = "localhost:7946" },
		"bad port":    func(c *Config) { c.BindAddr = "127.0.0.1:99999" },
		"bad role":    func(c *Config) { c.Tags.Role = "" },
		"bad adv":     func(c *Config) { c.AdvertiseAddr = "nowhere" },
		"bad range":   func(c *Config) { c.Tags.PortMin, c.Tags.PortMax = 10, 5 },
		"bad iso":     func(c *Config) { c.Tags.Isolations = []string{"a,b"} },
		"long addr":   func(c *Config) { c.Tags.APIAddr = strings.Repeat("x", MaxAddrLen+1) },
		"neg memory":  func(c *Config) { c.Tags.MemoryMiB = -1 },
		"many cores":  func(c *Config) { c.Tags.Cores = MaxCores + 1 },
		"bad keyring": nil,
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig(t, "a", key(1))
			if mod != nil {
				mod(&cfg)
			} else {
				if err := os.MkdirAll(filepath.Dir(cfg.KeyringFile), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(cfg.KeyringFile, []byte("{junk"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			m, err := Start(cfg)
			if err == nil {
				_ = m.Shutdown()
				t.Fatal("Start accepted a bad config")
			}
			t.Log(err)
		})
	}
}

func TestLeaveAndCrash(t *testing.T) {
	k := key(3)
	a := start(t, testConfig(t, "a", k))
	b := start(t, testConfig(t, "b", k))
	c := start(t, testConfig(t, "c", k))
	join(t, b, a)
	join(t, c, a)
	waitAlive(t, a, "a", "b", "c")
	waitAlive(t, c, "a", "b", "c")

	// Graceful: b leaves, as on SIGTERM.
	if err := b.Leave(); err != nil {
		t.Fatal(err)
	}
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, "b", StateLeft)
	waitState(t, c, "b", StateLeft)
	waitEvent(t, a, EventLeave, "b")

	// Crash: c stops without a word.
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	ev := waitEvent(t, a, EventFailed, "c")
	if ev.Member.State != StateFailed || ev.Member.SchedulerNode().Alive {
		t.Errorf("failed event member: %+v", ev.Member)
	}
	waitState(t, a, "c", StateFailed)
	// The crashed node's events channel is closed, so readers' loops end.
	for range c.Events() {
	}
}

func TestFailedMembersAreReaped(t *testing.T) {
	k := key(4)
	acfg := testConfig(t, "a", k)
	acfg.ReapAfter = 2 * time.Second
	a := start(t, acfg)
	b := start(t, testConfig(t, "b", k))
	join(t, b, a)
	waitAlive(t, a, "a", "b")
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, a, EventFailed, "b")
	waitEvent(t, a, EventReap, "b")
	waitAlive(t, a, "a")
}

func TestNameConflictRefused(t *testing.T) {
	k := key(5)
	a := start(t, testConfig(t, "a", k))
	b := start(t, testConfig(t, "b", k))
	join(t, b, a)
	waitAlive(t, a, "a", "b")
	bAddr := addr(b)

	for _, target := range []*Membership{a, b} {
		dup := start(t, testConfig(t, "b", k))
		_, err := dup.Join([]string{addr(target)})
		if !errors.Is(err, ErrNameConflict) {
			t.Fatalf("second node named b joins via %s: err=%v, want ErrNameConflict", target.Name(), err)
		}
		t.Log(err)
		_ = dup.Shutdown()
	}
	for _, m := range []*Membership{a, b} {
		waitAlive(t, m, "a", "b")
		if x, _ := member(m, "b"); x.Addr != bAddr {
			t.Errorf("%s sees b at %s, want the original %s", m.Name(), x.Addr, bAddr)
		}
	}
}

func TestSnapshotRejoin(t *testing.T) {
	k := key(6)
	a := start(t, testConfig(t, "a", k))
	bcfg := testConfig(t, "b", k)
	bcfg.SnapshotPath = filepath.Join(t.TempDir(), "serf", "snapshot")
	b := start(t, bcfg)
	join(t, b, a)
	waitAlive(t, a, "a", "b")
	waitAlive(t, b, "a", "b")
	bcfg.BindAddr = addr(b)
	if err := b.Shutdown(); err != nil { // crash, no leave
		t.Fatal(err)
	}
	waitState(t, a, "b", StateFailed)

	// Restarted on the same address with the same snapshot, b finds a
	// again without being told.
	b2 := start(t, bcfg)
	waitAlive(t, a, "a", "b")
	waitAlive(t, b2, "a", "b")
}

func TestKeyringFile(t *testing.T) {
	cfg := testConfig(t, "a", key(7))
	// A key from an earlier rotation is already on disk.
	if err := writeKeyringFile(cfg.KeyringFile, [][]byte{key(8)}); err != nil {
		t.Fatal(err)
	}
	m := start(t, cfg)
	fi, err := os.Stat(cfg.KeyringFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("keyring mode %v, want 0600", fi.Mode().Perm())
	}
	keys, err := readKeyringFile(cfg.KeyringFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || string(keys[0]) != string(key(7)) || string(keys[1]) != string(key(8)) {
		t.Errorf("keyring holds %d keys, want the configured key first and the old one kept", len(keys))
	}
	if !m.serf.EncryptionEnabled() {
		t.Error("encryption is off")
	}
	kr, err := loadKeyring(key(7), cfg.KeyringFile)
	if err != nil {
		t.Fatal(err)
	}
	if string(kr.GetPrimaryKey()) != string(key(7)) || len(kr.GetKeys()) != 2 {
		t.Error("the configured key is not the primary key, or the old key was lost")
	}
	raw, _ := os.ReadFile(cfg.KeyringFile)
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Errorf("keyring is not serf's JSON list: %v", err)
	}
}
