// Package rootless tells whether the daemon runs without root on the host:
// in a user namespace that maps only some ids (unshare --map-root-user,
// rootlesskit), as on HPC machines where users have no root. Host-root-only
// features (loop devices, host cgroups, user namespaces from the systemd
// container id block) are then turned off by their owners, which ask here.
package rootless

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Mapping is one line of /proc/self/uid_map or gid_map: Count ids from
// Inside in this namespace are Outside and on in the parent.
type Mapping struct {
	Inside, Outside, Count uint64
}

// fullCount is the size of the identity mapping of the initial namespace.
const fullCount = 4294967295

// ParseIDMap reads a uid_map or gid_map.
func ParseIDMap(r io.Reader) ([]Mapping, error) {
	var out []Mapping
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("id map line %q: want 3 fields", s.Text())
		}
		var m Mapping
		for i, dst := range []*uint64{&m.Inside, &m.Outside, &m.Count} {
			v, err := strconv.ParseUint(f[i], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("id map line %q: %w", s.Text(), err)
			}
			*dst = v
		}
		out = append(out, m)
	}
	return out, s.Err()
}

// IsRootless reports whether maps is anything but the host's own identity
// mapping "0 0 4294967295".
func IsRootless(maps []Mapping) bool {
	return !(len(maps) == 1 && maps[0] == Mapping{0, 0, fullCount})
}

// ContiguousFromZero is how many ids from 0 on are mapped without a gap:
// the ids a range such as ping_group_range "0 N-1" may name.
func ContiguousFromZero(maps []Mapping) uint64 {
	var n uint64
	for changed := true; changed; {
		changed = false
		for _, m := range maps {
			if m.Inside <= n && m.Inside+m.Count > n {
				n, changed = m.Inside+m.Count, true
			}
		}
	}
	return n
}

// HostUID is the host uid of id 0 here, or of the caller when 0 is not
// mapped.
func HostUID(maps []Mapping) uint64 {
	for _, m := range maps {
		if m.Inside == 0 && m.Count > 0 {
			return m.Outside
		}
	}
	return uint64(os.Getuid())
}

// State is what the daemon learned about its user namespace.
type State struct {
	// Rootless is true in a user namespace without the host's root.
	Rootless bool
	// GIDs is how many group ids from 0 on are mapped.
	GIDs uint64
	// HostUID is the host uid of root here (the user's own uid when
	// rootless).
	HostUID uint64
}

// Detect reads this process's id maps. A kernel without user namespaces
// (no uid_map) is the host's root namespace.
func Detect() State {
	uids, err := readMap("/proc/self/uid_map")
	if err != nil || len(uids) == 0 {
		return State{GIDs: fullCount, HostUID: uint64(os.Getuid())}
	}
	gids, err := readMap("/proc/self/gid_map")
	if err != nil {
		gids = uids
	}
	return State{Rootless: IsRootless(uids), GIDs: ContiguousFromZero(gids), HostUID: HostUID(uids)}
}

func readMap(path string) ([]Mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseIDMap(f)
}

// DataDir is the default data dir: hostDefault for the host's root, else a
// directory of the user's on local disk ($XDG_RUNTIME_DIR, else $TMPDIR,
// else /tmp), never the home directory, which on HPC machines is a shared
// filesystem where bbolt's and raft's locks and fsyncs do not hold.
func DataDir(hostDefault string, s State, getenv func(string) string) string {
	if !s.Rootless && os.Geteuid() == 0 {
		return hostDefault
	}
	if d := getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "hypercore")
	}
	tmp := getenv("TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	return filepath.Join(tmp, "hypercore-"+strconv.FormatUint(s.HostUID, 10))
}
