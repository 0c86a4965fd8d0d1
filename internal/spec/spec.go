// Package spec is the one place that says what a valid workload is. Every
// input from the network, the CLI or a hac.toml file becomes a Spec through
// this package, so the rest of hypercore can trust what it is handed.
package spec

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// Isolation names how a workload is fenced off from its host.
type Isolation string

// The isolations a node may offer.
const (
	IsolationContainer Isolation = "container"
	IsolationGVisor    Isolation = "gvisor"
	IsolationMicroVM   Isolation = "microvm"
)

// Limits on what a single workload may ask for. They bound input from the
// network; a node's real capacity is checked at placement.
const (
	MinCores     = 0.01
	MaxCores     = 256
	MinMemoryMiB = 16
	MaxMemoryMiB = 1 << 20 // 1 TiB
	// MinDiskMiB and MaxDiskMiB bound the writable layer's size; 0
	// means the node's --default-disk.
	MinDiskMiB       = 16
	MaxDiskMiB       = 1 << 20 // 1 TiB, well inside ext4's largest file
	MaxPorts         = 64
	MaxEnv           = 1024
	MaxEnvBytes      = 256 << 10
	MaxArgs          = 256
	MaxArgBytes      = 64 << 10
	MaxBodyBytes     = 1 << 20
	DefaultCores     = 1
	DefaultMemoryMiB = 256
)

// MinMicroVMMemoryMiB is the least memory a microvm workload may ask for.
// Below it the guest kernel cannot unpack the initramfs, so a VM would
// need more than its spec says, and the node, which reserves what the spec
// says, would hand out memory it does not have.
const MinMicroVMMemoryMiB = 128

// Protocol says how the proxy exposes a public port.
type Protocol string

// The protocols a port mapping may use.
const (
	ProtoHTTP Protocol = "http"
	ProtoTCP  Protocol = "tcp"
)

// Port maps a public port on every node to a port inside the workload.
type Port struct {
	Public uint16   `json:"public"`
	Target uint16   `json:"target"`
	Proto  Protocol `json:"proto"`
}

// Spec is a validated description of a workload. Fields are only ever set by
// the constructors in this package, which validate them.
type Spec struct {
	Image     string  `json:"image"`
	Cores     float64 `json:"cores"`
	MemoryMiB int64   `json:"memory_mib"`
	// DiskMiB caps the workload's writable layer; 0 leaves it to the
	// node that runs it (--default-disk).
	DiskMiB   int64     `json:"disk_mib,omitempty"`
	Ports     []Port    `json:"ports,omitempty"`
	Env       []string  `json:"env,omitempty"`
	Args      []string  `json:"args,omitempty"`
	Isolation Isolation `json:"isolation"`
	Tty       bool      `json:"tty,omitempty"`
	// Egress are destinations the workload may reach although the node's
	// egress policy blocks them.
	Egress []netip.Prefix `json:"egress,omitempty"`
	// Secrets maps environment names to sealed secrets' names (never
	// values): {"DB_PASSWORD": "db-password"}.
	Secrets  map[string]string `json:"secrets,omitempty"`
	Security Security          `json:"security"`

	// Options beyond the image's own config (options.go).

	// Restart is the restart policy as ParseRestart reads it; "" is no.
	Restart string `json:"restart,omitempty"`
	// Volumes maps a volume name to where it is mounted.
	Volumes map[string]string `json:"volumes,omitempty"`
	// Entrypoint, Workdir and User replace the image's when set.
	Entrypoint []string `json:"entrypoint,omitempty"`
	Workdir    string   `json:"workdir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// FieldError reports which input field is wrong and why. Its message starts
// with the field name so an API user can see at once what to fix.
type FieldError struct {
	Field string
	Msg   string
}

// Error is "field: what is wrong with it".
func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Input is the loosely typed shape shared by every front door (the classic
// /spawn JSON, protobuf, CLI flags, hac.toml). Build validates it into a Spec.
type Input struct {
	Image     string
	Cores     float64
	MemoryMiB int64
	// DiskMiB is the writable layer's size; 0 means the node's default.
	DiskMiB int64
	// Ports keys are public ports, optionally prefixed "tcp:" or "http:";
	// PortKeys writes them.
	Ports     map[string]int64
	Env       []string
	Args      []string
	Isolation string
	Tty       bool
	// Egress are CIDRs the workload may reach despite the egress policy.
	Egress []string
	// Secrets maps environment names to secret names.
	Secrets  map[string]string
	Security Security

	// Options beyond the image's own config (options.go).
	Restart    string
	Volumes    map[string]string
	Entrypoint []string
	Workdir    string
	User       string
}

// Build validates in and returns the Spec it describes, with defaults filled
// in for fields left at their zero value.
func Build(in Input) (Spec, error) {
	s := Spec{Cores: in.Cores, MemoryMiB: in.MemoryMiB, DiskMiB: in.DiskMiB, Tty: in.Tty}
	if s.Cores == 0 {
		s.Cores = DefaultCores
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = DefaultMemoryMiB
	}
	img, err := ValidateImageRef(in.Image)
	if err != nil {
		return Spec{}, err
	}
	s.Image = img
	if math.IsNaN(s.Cores) || s.Cores < MinCores || s.Cores > MaxCores {
		return Spec{}, fieldErr("cores", "%v is outside %v-%v", in.Cores, MinCores, MaxCores)
	}
	if s.MemoryMiB < MinMemoryMiB || s.MemoryMiB > MaxMemoryMiB {
		return Spec{}, fieldErr("memory", "%d MiB is outside %d-%d MiB", in.MemoryMiB, MinMemoryMiB, MaxMemoryMiB)
	}
	if s.DiskMiB != 0 && (s.DiskMiB < MinDiskMiB || s.DiskMiB > MaxDiskMiB) {
		return Spec{}, fieldErr("disk", "%d MiB is outside %d-%d MiB (0 or no value means the node's --default-disk)", in.DiskMiB, MinDiskMiB, MaxDiskMiB)
	}
	if s.Ports, err = buildPorts(in.Ports); err != nil {
		return Spec{}, err
	}
	if s.Env, err = validateEnv(in.Env); err != nil {
		return Spec{}, err
	}
	if s.Args, err = validateArgs(in.Args); err != nil {
		return Spec{}, err
	}
	if s.Egress, err = buildEgress(in.Egress); err != nil {
		return Spec{}, err
	}
	switch iso := Isolation(strings.ToLower(in.Isolation)); iso {
	case "":
		s.Isolation = IsolationContainer
	case IsolationContainer, IsolationGVisor, IsolationMicroVM:
		s.Isolation = iso
	default:
		return Spec{}, fieldErr("isolation", "%q is not one of container, gvisor, microvm", in.Isolation)
	}
	if s.Security, err = buildSecurity(in.Security); err != nil {
		return Spec{}, err
	}
	rp, err := ParseRestart(in.Restart)
	if err != nil {
		return Spec{}, err
	}
	s.Restart = rp.String()
	if s.Volumes, err = buildVolumes(in.Volumes); err != nil {
		return Spec{}, err
	}
	if err := buildImageOverrides(in, &s); err != nil {
		return Spec{}, err
	}
	if s.Isolation == IsolationMicroVM && s.MemoryMiB < MinMicroVMMemoryMiB {
		return Spec{}, fieldErr("memory", "must be at least %d MiB for isolation microvm, not %d: ask for %d or more, or run it with isolation container or gvisor",
			MinMicroVMMemoryMiB, s.MemoryMiB, MinMicroVMMemoryMiB)
	}
	if s.Secrets, err = buildSecrets(in.Secrets, s); err != nil {
		return Spec{}, err
	}
	return s, nil
}

// ValidateImageRef checks that ref names an OCI image (tag or digest) and
// returns it trimmed.
func ValidateImageRef(ref string) (string, error) {
	ref = strings.TrimSpace(ref)
	if ref == "" {
		return "", fieldErr("image_ref", "is required (for example registry.example/web:1)")
	}
	if len(ref) > 512 {
		return "", fieldErr("image_ref", "is longer than 512 characters")
	}
	if err := checkImageRefSyntax(ref); err != nil {
		return "", err
	}
	if _, err := name.ParseReference(ref); err != nil {
		return "", fieldErr("image_ref", "%q does not parse: %v", ref, err)
	}
	return ref, nil
}

func buildPorts(in map[string]int64) ([]Port, error) {
	if len(in) > MaxPorts {
		return nil, fieldErr("ports", "has %d entries; at most %d are allowed", len(in), MaxPorts)
	}
	ports := make([]Port, 0, len(in))
	seen := map[uint16]bool{}
	for key, target := range in {
		p, err := parsePort(key, target)
		if err != nil {
			return nil, err
		}
		if seen[p.Public] {
			return nil, fieldErr("ports", "public port %d is mapped twice", p.Public)
		}
		seen[p.Public] = true
		ports = append(ports, p)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i].Public < ports[j].Public })
	if len(ports) == 0 {
		return nil, nil
	}
	return ports, nil
}

func parsePort(key string, target int64) (Port, error) {
	proto, num, found := strings.Cut(key, ":")
	if !found {
		proto, num = "", key
	}
	pub, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil {
		return Port{}, fieldErr("ports", "public port %q is not a number", key)
	}
	if pub < 1 || pub > 65535 {
		return Port{}, fieldErr("ports", "public port %d is outside 1-65535", pub)
	}
	if target < 1 || target > 65535 {
		return Port{}, fieldErr("ports", "workload port %d (for public port %d) is outside 1-65535", target, pub)
	}
	p := Port{Public: uint16(pub), Target: uint16(target)}
	switch strings.ToLower(proto) {
	case "":
		p.Proto = defaultProto(p.Public)
	case "http":
		// Only 80 and 443 have HTTP listeners that route by Host.
		if pub != 80 && pub != 443 {
			return Port{}, fieldErr("ports", "%q: HTTP routing is served on public ports 80 and 443 only; map %d as tcp", key, pub)
		}
		p.Proto = ProtoHTTP
	case "tcp":
		p.Proto = ProtoTCP
	default:
		return Port{}, fieldErr("ports", "protocol %q in %q is not http or tcp", proto, key)
	}
	return p, nil
}

// defaultProto is how a public port is served when its key names no
// protocol: 80 and 443 by the HTTP(S) proxy, which routes by Host, and any
// other port as raw TCP, which has no Host to route on.
func defaultProto(public uint16) Protocol {
	if public == 80 || public == 443 {
		return ProtoHTTP
	}
	return ProtoTCP
}

// PortKeys writes ports as the API takes them: {"443": 3000}, the public
// port alone when it is served the default way and prefixed with its
// protocol ("tcp:80") when it is not. It is the one encoder of port keys,
// for REST and Connect answers, the CLI's requests and Check, so what the
// API shows can be sent back and means the same workload.
func PortKeys(ports []Port) map[string]uint16 {
	m := make(map[string]uint16, len(ports))
	for _, p := range ports {
		key := strconv.Itoa(int(p.Public))
		if p.Proto != defaultProto(p.Public) {
			key = string(p.Proto) + ":" + key
		}
		m[key] = p.Target
	}
	return m
}

var envKey = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)

func validateEnv(env []string) ([]string, error) {
	if len(env) > MaxEnv {
		return nil, fieldErr("env", "has %d entries; at most %d are allowed", len(env), MaxEnv)
	}
	total := 0
	for i, kv := range env {
		total += len(kv)
		k, _, ok := strings.Cut(kv, "=")
		if !ok || !envKey.MatchString(k) {
			return nil, fieldErr("env", "entry %d must look like KEY=VALUE with KEY made of letters, digits and _", i)
		}
		if strings.ContainsRune(kv, 0) {
			return nil, fieldErr("env", "entry %d (%s) contains a NUL byte", i, k)
		}
	}
	if total > MaxEnvBytes {
		return nil, fieldErr("env", "is %d bytes; at most %d are allowed", total, MaxEnvBytes)
	}
	if len(env) == 0 {
		return nil, nil
	}
	return append([]string(nil), env...), nil
}

func validateArgs(args []string) ([]string, error) {
	if len(args) > MaxArgs {
		return nil, fieldErr("args", "has %d entries; at most %d are allowed", len(args), MaxArgs)
	}
	total := 0
	for i, a := range args {
		total += len(a)
		if strings.ContainsRune(a, 0) {
			return nil, fieldErr("args", "entry %d contains a NUL byte", i)
		}
	}
	if total > MaxArgBytes {
		return nil, fieldErr("args", "is %d bytes; at most %d are allowed", total, MaxArgBytes)
	}
	if len(args) == 0 {
		return nil, nil
	}
	return append([]string(nil), args...), nil
}

var idPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// ID is a workload id that has been checked: a lowercase version 4 UUID,
// which is also a valid DNS label and a safe file name. Only NewID and
// ParseID make one from outside this package, so code past the API edge
// that holds an ID needs no check of its own.
type ID string

// String returns the id as text.
func (id ID) String() string { return string(id) }

// NewID returns a fresh workload id: a random (version 4) UUID, as the
// classic /spawn API hands out.
func NewID() ID {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("spec: no randomness: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return ID(h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:])
}

// ParseID checks that s is a workload id made by NewID. Anything else, such
// as a path, is refused before it reaches a file name or a map key.
func ParseID(s string) (ID, error) {
	if !idPattern.MatchString(s) {
		return "", fieldErr("id", "%q is not a workload id (a lowercase UUID such as 497b6ad8-11a3-4701-8b6a-11396e11ca7d)", truncate(s, 80))
	}
	return ID(s), nil
}

// ValidateID is ParseID for callers that keep the id as a string.
func ValidateID(id string) error {
	_, err := ParseID(id)
	return err
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ValidateExec checks a command to run inside a workload.
func ValidateExec(args, env []string) error {
	if len(args) == 0 {
		return fieldErr("cmd", "is required: name the program to run, for example sh")
	}
	if _, err := validateArgs(args); err != nil {
		return fieldErr("cmd", "%s", err.(*FieldError).Msg)
	}
	_, err := validateEnv(env)
	return err
}

// MaxLogTail bounds how many lines a log request may start back from the end.
const MaxLogTail = 1_000_000

// ParseTail reads a log tail count from a query string value.
func ParseTail(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > MaxLogTail {
		return 0, fieldErr("tail", "%q is not a line count from 0 to %d", truncate(s, 20), MaxLogTail)
	}
	return n, nil
}

// ParseBool reads a flag from a query string value: 1, true, yes or empty.
func ParseBool(field, s string) (bool, error) {
	switch strings.ToLower(s) {
	case "", "0", "false", "no":
		return false, nil
	case "1", "true", "yes":
		return true, nil
	}
	return false, fieldErr(field, "%q is not a boolean (use 1 or 0)", truncate(s, 20))
}

// MaxStopTimeout bounds how long a stop may wait for a graceful exit.
const MaxStopTimeout = time.Hour

// ParseStopTimeout reads a stop grace period in whole seconds; "" is 0,
// which means the node's default.
func ParseStopTimeout(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || time.Duration(n)*time.Second > MaxStopTimeout {
		return 0, fieldErr("timeout", "%q is not a number of seconds from 0 to 3600", truncate(s, 20))
	}
	return time.Duration(n) * time.Second, nil
}

// Check validates a Spec that arrived already built, such as an allocation
// a peer node sends: the network is not trusted just because the sender is
// a cluster member, so it goes through the same rules as Build, with its
// ports written by PortKeys as a client would send them. A Spec Build would
// not have made (a duplicate port, cores left at 0, an isolation in capitals)
// is refused too, so code that trusts a checked Spec gets what Build gives.
func (s Spec) Check() error {
	for _, p := range s.Ports {
		if p.Proto != ProtoTCP && p.Proto != ProtoHTTP {
			return fieldErr("ports", "port %d has unknown protocol %q", p.Public, p.Proto)
		}
	}
	keys := PortKeys(s.Ports)
	if len(keys) != len(s.Ports) {
		return fieldErr("ports", "a public port is mapped twice in %v", s.Ports)
	}
	ports := make(map[string]int64, len(keys))
	for k, v := range keys {
		ports[k] = int64(v)
	}
	b, err := Build(Input{
		Image: s.Image, Cores: s.Cores, MemoryMiB: s.MemoryMiB, DiskMiB: s.DiskMiB, Ports: ports,
		Env: s.Env, Args: s.Args, Isolation: string(s.Isolation), Tty: s.Tty,
		Egress: EgressStrings(s.Egress), Secrets: s.Secrets,
		Security: s.Security,
		Restart:  s.Restart, Volumes: s.Volumes, Entrypoint: s.Entrypoint, Workdir: s.Workdir, User: s.User,
	})
	if err != nil {
		return err
	}
	// Build fills in defaults and normalises, so a Spec it would not have
	// made passes it; compare to catch those.
	const differs = "is %v where a validated spec holds %v"
	switch {
	case b.Image != s.Image:
		return fieldErr("image_ref", differs, strconv.Quote(truncate(s.Image, 80)), strconv.Quote(b.Image))
	case b.Cores != s.Cores:
		return fieldErr("cores", differs, s.Cores, b.Cores)
	case b.MemoryMiB != s.MemoryMiB:
		return fieldErr("memory", differs, s.MemoryMiB, b.MemoryMiB)
	case !slices.Equal(b.Ports, s.Ports):
		return fieldErr("ports", differs+" (sorted by public port)", s.Ports, b.Ports)
	case b.Isolation != s.Isolation:
		return fieldErr("isolation", differs, strconv.Quote(string(s.Isolation)), strconv.Quote(string(b.Isolation)))
	case !slices.Equal(b.Egress, s.Egress):
		return fieldErr("egress", differs+" (masked, sorted, no repeats)", s.Egress, b.Egress)
	case !maps.Equal(b.Secrets, s.Secrets):
		return fieldErr("secrets", differs, s.Secrets, b.Secrets)
	case b.Security != s.Security && !s.Security.IsZero():
		// A zero Security comes from a node that predates it and means
		// the defaults, which the driver applies to it.
		return fieldErr("security", differs, s.Security, b.Security)
	case b.Restart != s.Restart:
		return fieldErr("restart", differs, strconv.Quote(s.Restart), strconv.Quote(b.Restart))
	case b.Workdir != s.Workdir:
		return fieldErr("workdir", differs, strconv.Quote(truncate(s.Workdir, 80)), strconv.Quote(b.Workdir))
	}
	return nil
}

// PublishesTCP reports whether s publishes port as a raw TCP port, which
// only one running workload per node can hold.
func (s Spec) PublishesTCP(port uint16) bool {
	for _, p := range s.Ports {
		if p.Proto == ProtoTCP && p.Public == port {
			return true
		}
	}
	return false
}
