package membership

import (
	"bytes"
	"log/slog"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/hypercore-dev/hypercore/internal/cluster/scheduler"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// worstTags is the largest Tags that Validate accepts.
func worstTags() Tags {
	iso := strings.Repeat("abcdefg,", MaxIsolationsLen/8)
	iso = iso[:MaxIsolationsLen-1] + "x"
	return Tags{
		Role: RoleServer,
		// The longest shortest-representation of a float64 in range.
		Cores:         2.2250738585072014e-308,
		MemoryMiB:     MaxMemoryMiB,
		FreeMemoryMiB: MaxMemoryMiB,
		Public:        true,
		APIAddr:       strings.Repeat("a", MaxAddrLen),
		RPCAddr:       strings.Repeat("r", MaxAddrLen),
		PortMin:       65535,
		PortMax:       65535,
		Isolations:    strings.Split(iso, ","),
	}
}

func TestWorstCaseTagsFit(t *testing.T) {
	w := worstTags()
	if err := w.Validate(); err != nil {
		t.Fatal(err)
	}
	bound := encodedSize(w.encode())
	if bound > serfTagLimit {
		t.Fatalf("worst-case tags may take %d bytes, over serf's %d", bound, serfTagLimit)
	}
	t.Logf("worst-case tags: at most %d of %d bytes", bound, serfTagLimit)

	// serf itself refuses tags over the limit, at Start and at UpdateTags;
	// what it actually encoded must be within our bound.
	cfg := testConfig(t, "worst", key(9))
	cfg.Tags = w
	m := start(t, cfg)
	if n := len(m.serf.Memberlist().LocalNode().Meta); n > bound {
		t.Errorf("serf encoded %d bytes, more than the bound %d", n, bound)
	}
	if got := m.LocalMember(); !reflect.DeepEqual(got.Tags, w) || got.TagsErr != nil {
		t.Errorf("round trip through serf: %+v (%v)", got.Tags, got.TagsErr)
	}
	w.Role = RoleWorker
	if err := m.UpdateTags(w); err != nil {
		t.Fatal(err)
	}
	if n := len(m.serf.Memberlist().LocalNode().Meta); n > bound {
		t.Errorf("serf encoded %d bytes, more than the bound %d", n, bound)
	}
}

func TestCoresFormatIsShort(t *testing.T) {
	// encodedSize's budget for cores assumes at most 24 characters.
	for _, c := range []float64{0, 0.1 + 0.2, 1.0 / 3, MaxCores, math.SmallestNonzeroFloat64, 2.2250738585072014e-308, 65535.99999999999} {
		if s := strconv.FormatFloat(c, 'g', -1, 64); len(s) > 24 {
			t.Errorf("cores %v encodes as %d chars", c, len(s))
		}
	}
}

func TestTagsRoundTrip(t *testing.T) {
	for _, tg := range []Tags{
		{Role: RoleWorker},
		{Role: RoleServer, Cores: 0.5, MemoryMiB: 512},
		workerTags("b"),
		worstTags(),
	} {
		got, err := decodeTags(tg.encode())
		if err != nil || !reflect.DeepEqual(got, tg) {
			t.Errorf("round trip %+v: got %+v, %v", tg, got, err)
		}
	}
}

func TestDecodeTagsRobust(t *testing.T) {
	good := workerTags("b").encode()
	with := func(k, v string) map[string]string {
		m := make(map[string]string, len(good))
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == "<delete>" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name string
		in   map[string]string
		bad  bool
		// check inspects the result.
		check func(Tags) bool
	}{
		{"nil", nil, true, func(t Tags) bool { return reflect.DeepEqual(t, Tags{}) }},
		{"pre-serf role only", map[string]string{"role": "web"}, true, func(t Tags) bool { return t.Role == "" }},
		{"unknown key ignored", with("zz", "future"), false, func(t Tags) bool { return t.Cores == 4 }},
		{"no free memory", with(keyFreeMemory, "<delete>"), false, func(t Tags) bool { return t.FreeMemoryMiB == 0 && t.MemoryMiB == 8192 }},
		{"bad role", with(keyRole, "boss"), true, func(t Tags) bool { return t.Role == "" && t.Cores == 4 }},
		{"bad cores", with(keyCores, "many"), true, func(t Tags) bool { return t.Cores == 0 && t.MemoryMiB == 8192 }},
		{"nan cores", with(keyCores, "NaN"), true, func(t Tags) bool { return t.Cores == 0 }},
		{"inf cores", with(keyCores, "+Inf"), true, func(t Tags) bool { return t.Cores == 0 }},
		{"negative memory", with(keyMemory, "-5"), true, func(t Tags) bool { return t.MemoryMiB == 0 && t.Cores == 4 }},
		{"huge memory", with(keyMemory, "99999999999999999999999"), true, func(t Tags) bool { return t.MemoryMiB == 0 }},
		{"bad public", with(keyPublic, "yes"), true, func(t Tags) bool { return !t.Public }},
		{"bad ports", with(keyPorts, "9-1"), true, func(t Tags) bool { return t.PortMin == 0 && t.PortMax == 0 }},
		{"ports no dash", with(keyPorts, "80"), true, func(t Tags) bool { return t.PortMin == 0 }},
		{"ports overflow", with(keyPorts, "1-70000"), true, func(t Tags) bool { return t.PortMax == 0 }},
		{"bad isolations", with(keyIsolations, "container,,gvisor"), true, func(t Tags) bool { return t.Isolations == nil }},
		{"long addr", with(keyAPI, strings.Repeat("x", 300)), true, func(t Tags) bool { return t.APIAddr == "" && t.RPCAddr != "" }},
		{"binary junk", with(keyCores, "\x00\xff\xfe"), true, func(t Tags) bool { return t.Cores == 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeTags(tc.in)
			if (err != nil) != tc.bad {
				t.Errorf("error %v, want bad=%v", err, tc.bad)
			}
			if !tc.check(got) {
				t.Errorf("decoded %+v", got)
			}
		})
	}
}

func FuzzDecodeTags(f *testing.F) {
	f.Add("server", "4", "8192", "1-2", "container,gvisor", "1")
	f.Add("", "", "", "", "", "")
	f.Add("worker", "1e400", "-1", "0-0", ",", "2")
	f.Fuzz(func(t *testing.T, r, c, m, pr, iso, pub string) {
		tg, err := decodeTags(map[string]string{keyRole: r, keyCores: c, keyMemory: m, keyPorts: pr, keyIsolations: iso, keyPublic: pub})
		if err == nil {
			// Whatever decodes cleanly must be valid to announce.
			if verr := tg.Validate(); verr != nil {
				t.Errorf("decoded %+v cleanly but it does not validate: %v", tg, verr)
			}
		}
	})
}

func TestSchedulerNode(t *testing.T) {
	m := Member{Name: "b", Addr: "127.0.0.1:7946", State: StateAlive, Tags: workerTags("b")}
	got := m.SchedulerNode()
	want := scheduler.Node{
		Name:       "b",
		Alive:      true,
		Public:     true,
		Isolations: []spec.Isolation{spec.IsolationContainer, spec.IsolationGVisor},
		Cores:      4,
		MemoryMiB:  8192,
		PortMin:    30000,
		PortMax:    32767,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("SchedulerNode:\n got %+v\nwant %+v", got, want)
	}
	for _, s := range []State{StateFailed, StateLeft, StateLeaving, StateUnknown} {
		m.State = s
		if m.SchedulerNode().Alive {
			t.Errorf("%s member converts to an alive node", s)
		}
	}
	m.State = StateAlive
	m.TagsErr = errMissingRole
	if m.SchedulerNode().Alive {
		t.Error("member with unreadable tags converts to an alive node")
	}

	// The converted node is placeable by the scheduler.
	m.TagsErr = nil
	sp := spec.Spec{Image: "x", Cores: 1, MemoryMiB: 256, Isolation: spec.IsolationContainer}
	if _, err := scheduler.Rank([]scheduler.Node{m.SchedulerNode()}, sp, scheduler.BinPack); err != nil {
		t.Errorf("scheduler refuses the converted node: %v", err)
	}
}

func TestEmitDropsOldest(t *testing.T) {
	m := &Membership{events: make(chan Event, EventBuffer), log: slog.New(slog.DiscardHandler)}
	for i := range EventBuffer + 10 {
		m.emit(Event{Type: EventUpdate, Member: Member{Name: strconv.Itoa(i)}})
	}
	if m.Dropped() != 10 || len(m.events) != EventBuffer {
		t.Fatalf("dropped %d, queued %d", m.Dropped(), len(m.events))
	}
	if ev := <-m.events; ev.Member.Name != "10" {
		t.Errorf("oldest kept is %s, want 10", ev.Member.Name)
	}
}

func TestLogBridgeLevels(t *testing.T) {
	var buf bytes.Buffer
	l := newStdLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	l.Printf("[WARN] memberlist: Refuting a suspect message (from: b)")
	l.Printf("[DEBUG] serf: messageJoinType: a")
	l.Printf("no level at all")
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="Refuting a suspect message (from: b)" component=memberlist`,
		`level=DEBUG msg="messageJoinType: a" component=serf`,
		`level=INFO msg="no level at all" component=serf`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log output lacks %s:\n%s", want, out)
		}
	}
}
