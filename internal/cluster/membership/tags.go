package membership

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Roles a node may announce.
const (
	RoleServer = "server"
	RoleWorker = "worker"
)

// Bounds on the variable-length tags. They exist so that the worst case
// always fits serf's 512-byte tag limit (see encodedSize; TestWorstCaseTagsFit
// checks it) and a node can
// never be refused by serf at runtime because its tags grew.
const (
	// MaxAddrLen bounds APIAddr and RPCAddr: room for a bracketed IPv6
	// address with a port, or a modest DNS name.
	MaxAddrLen = 128
	// MaxIsolationsLen bounds the isolations joined by commas.
	MaxIsolationsLen = 64
	// MaxCores and MaxMemoryMiB bound capacity so that numbers stay short
	// and a garbled value cannot pose as a huge node.
	MaxCores     = 1 << 16
	MaxMemoryMiB = 1 << 40
)

// serfTagLimit is memberlist.MetaMaxSize, the most serf gossips for a
// node's tags. Kept as a constant here so the budget is visible next to the
// encoding it limits.
const serfTagLimit = 512

// Tag keys. They are short because every byte counts against the 512-byte
// limit, and they are part of the wire format between hypercore versions:
// never reuse a key for a different meaning.
const (
	keyRole       = "r"
	keyCores      = "c"
	keyMemory     = "m"
	keyFreeMemory = "fm"
	keyPublic     = "pub"
	keyAPI        = "api"
	keyRPC        = "rpc"
	keyPorts      = "pr"
	keyIsolations = "iso"
)

// Tags is what a node tells the cluster about itself. It travels as serf
// tags, so every node sees every other node's Tags without asking.
type Tags struct {
	// Role is RoleServer or RoleWorker.
	Role string
	// Cores and MemoryMiB are the capacity offered to workloads.
	Cores     float64
	MemoryMiB int64
	// FreeMemoryMiB is the memory the host itself reports as free. It is
	// advisory: reservations are counted by the leader from placements.
	FreeMemoryMiB int64
	// Public nodes can take workloads with public ports.
	Public bool
	// APIAddr is the node's API address, host:port.
	APIAddr string
	// RPCAddr is the node-to-node mTLS RPC address, host:port.
	RPCAddr string
	// PortMin and PortMax bound the public TCP ports the node may open;
	// both zero means any.
	PortMin, PortMax uint16
	// Isolations the node can run, e.g. "container", "gvisor".
	Isolations []string
}

// Validate reports whether t can be announced. It checks bounds rather than
// meaning (an address is not resolved), so that what one node sends every
// other node can decode.
func (t Tags) Validate() error {
	switch t.Role {
	case RoleServer, RoleWorker:
	default:
		return fmt.Errorf("membership: role %q: use %q or %q", t.Role, RoleServer, RoleWorker)
	}
	if math.IsNaN(t.Cores) || t.Cores < 0 || t.Cores > MaxCores {
		return fmt.Errorf("membership: cores %v: must be between 0 and %d", t.Cores, MaxCores)
	}
	if t.MemoryMiB < 0 || t.MemoryMiB > MaxMemoryMiB {
		return fmt.Errorf("membership: memory %d MiB: must be between 0 and %d", t.MemoryMiB, int64(MaxMemoryMiB))
	}
	if t.FreeMemoryMiB < 0 || t.FreeMemoryMiB > MaxMemoryMiB {
		return fmt.Errorf("membership: free memory %d MiB: must be between 0 and %d", t.FreeMemoryMiB, int64(MaxMemoryMiB))
	}
	if len(t.APIAddr) > MaxAddrLen {
		return fmt.Errorf("membership: API address is %d bytes: at most %d fit in gossip tags", len(t.APIAddr), MaxAddrLen)
	}
	if len(t.RPCAddr) > MaxAddrLen {
		return fmt.Errorf("membership: RPC address is %d bytes: at most %d fit in gossip tags", len(t.RPCAddr), MaxAddrLen)
	}
	if (t.PortMin != 0 || t.PortMax != 0) && (t.PortMin == 0 || t.PortMin > t.PortMax) {
		return fmt.Errorf("membership: public port range %d-%d: need 1 <= min <= max, or both 0 for any", t.PortMin, t.PortMax)
	}
	for _, iso := range t.Isolations {
		if !isToken(iso) {
			return fmt.Errorf("membership: isolation %q: use lower-case letters, digits and '-'", iso)
		}
	}
	if n := len(strings.Join(t.Isolations, ",")); n > MaxIsolationsLen {
		return fmt.Errorf("membership: isolations take %d bytes: at most %d fit in gossip tags", n, MaxIsolationsLen)
	}
	if n := encodedSize(t.encode()); n > serfTagLimit {
		// The bounds above make this unreachable; it guards against a
		// new tag added without updating them.
		return fmt.Errorf("membership: tags encode to %d bytes, over serf's limit of %d", n, serfTagLimit)
	}
	return nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// encode turns t into serf tags. Zero values of optional tags are left out
// to save room; decode treats a missing tag as its zero value.
func (t Tags) encode() map[string]string {
	m := map[string]string{
		keyRole:       t.Role,
		keyCores:      strconv.FormatFloat(t.Cores, 'g', -1, 64),
		keyMemory:     strconv.FormatInt(t.MemoryMiB, 10),
		keyFreeMemory: strconv.FormatInt(t.FreeMemoryMiB, 10),
	}
	if t.Public {
		m[keyPublic] = "1"
	}
	if t.APIAddr != "" {
		m[keyAPI] = t.APIAddr
	}
	if t.RPCAddr != "" {
		m[keyRPC] = t.RPCAddr
	}
	if t.PortMin != 0 || t.PortMax != 0 {
		m[keyPorts] = strconv.Itoa(int(t.PortMin)) + "-" + strconv.Itoa(int(t.PortMax))
	}
	if len(t.Isolations) > 0 {
		m[keyIsolations] = strings.Join(t.Isolations, ",")
	}
	return m
}

// encodedSize is an upper bound of the bytes serf needs for m: a magic
// byte, then a msgpack map of strings. Strings over 31 bytes are counted
// with the 3-byte header of msgpack's old raw format, which serf's encoder
// uses, so the bound holds whichever header it picks.
func encodedSize(m map[string]string) int {
	str := func(s string) int {
		if len(s) <= 31 {
			return 1 + len(s)
		}
		return 3 + len(s)
	}
	n := 1 + 3 // magic byte + the largest map header
	for k, v := range m {
		n += str(k) + str(v)
	}
	return n
}

// errMissingRole is wrapped into decode errors when a node announces no
// role: such tags did not come from a hypercore node of this era.
var errMissingRole = errors.New("no role tag")

// decodeTags reads tags written by encode. It never fails outright: each
// tag is read on its own, a missing tag is its zero value, and a garbled
// one is its zero value too, so one bad field cannot hide the others. The
// error lists what was wrong; callers keep the zero values and flag the
// member, because a node with garbled capacity must not look like a node
// with capacity. Unknown keys are ignored so that newer nodes can add tags.
func decodeTags(m map[string]string) (Tags, error) {
	var t Tags
	var errs []error
	bad := func(key, v string, why string) {
		errs = append(errs, fmt.Errorf("tag %q=%q: %s", key, truncate(v), why))
	}
	switch r := m[keyRole]; r {
	case RoleServer, RoleWorker:
		t.Role = r
	case "":
		errs = append(errs, errMissingRole)
	default:
		bad(keyRole, r, "unknown role")
	}
	if v, ok := m[keyCores]; ok {
		c, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(c) || c < 0 || c > MaxCores {
			bad(keyCores, v, "not a core count")
		} else {
			t.Cores = c
		}
	}
	readInt := func(key string, dst *int64) {
		v, ok := m[key]
		if !ok {
			return
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 || n > MaxMemoryMiB {
			bad(key, v, "not a MiB count")
			return
		}
		*dst = n
	}
	readInt(keyMemory, &t.MemoryMiB)
	readInt(keyFreeMemory, &t.FreeMemoryMiB)
	switch v := m[keyPublic]; v {
	case "", "0":
	case "1":
		t.Public = true
	default:
		bad(keyPublic, v, "not 0 or 1")
	}
	readAddr := func(key string, dst *string) {
		v := m[key]
		if len(v) > MaxAddrLen {
			bad(key, v, "too long")
			return
		}
		*dst = v
	}
	readAddr(keyAPI, &t.APIAddr)
	readAddr(keyRPC, &t.RPCAddr)
	if v, ok := m[keyPorts]; ok {
		lo, hi, found := strings.Cut(v, "-")
		pmin, err1 := strconv.ParseUint(lo, 10, 16)
		pmax, err2 := strconv.ParseUint(hi, 10, 16)
		if !found || err1 != nil || err2 != nil || pmin == 0 || pmin > pmax {
			bad(keyPorts, v, "not a port range min-max")
		} else {
			t.PortMin, t.PortMax = uint16(pmin), uint16(pmax)
		}
	}
	if v := m[keyIsolations]; v != "" {
		isos := strings.Split(v, ",")
		ok := len(v) <= MaxIsolationsLen
		for _, iso := range isos {
			ok = ok && isToken(iso)
		}
		if ok {
			t.Isolations = isos
		} else {
			bad(keyIsolations, v, "not a list of isolations")
		}
	}
	return t, errors.Join(errs...)
}

// truncate keeps error messages short when a peer sends junk.
func truncate(s string) string {
	const max = 40
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
