package runc

import (
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Host ids given to workloads with a private user namespace. Each workload
// gets its own range of idRangeSize ids, root inside being the first, so no
// two workloads share a host uid. The ranges lie in the block systemd sets
// aside for containers (524288-1879048191), which no host account uses.
const (
	idRangeSize  = 65536
	idRangeFirst = 524288
	idRangeSlots = (1879048192 - idRangeFirst) / idRangeSize
)

// idRanges hands out host id ranges to workloads. The record of who has
// which range is each workload's own config.json (its uid mappings), so
// it survives restarts; the map is that record read back, plus ranges
// handed out whose config.json is not written yet.
type idRanges struct {
	mu     sync.Mutex
	loaded bool
	byID   map[string]uint32 // workload id → first host id
	used   map[uint32]string // first host id → workload id
}

// load reads which ranges the workloads in stateDir hold, once.
func (r *idRanges) load(stateDir string) {
	if r.loaded {
		return
	}
	r.loaded = true
	r.byID, r.used = map[string]uint32{}, map[uint32]string{}
	entries, _ := os.ReadDir(stateDir)
	for _, e := range entries {
		if _, err := spec.ParseID(e.Name()); err != nil || !e.IsDir() {
			continue
		}
		s, err := readSpec(filepath.Join(stateDir, e.Name(), "config.json"))
		if err != nil {
			continue
		}
		if host, ok := hostRoot(s); ok {
			r.byID[e.Name()], r.used[host] = host, e.Name()
		}
	}
}

// get returns the range id holds, allocating a free one if it has none.
// The search starts at a slot drawn from stateDir, so that nodes sharing a
// kernel (each has its own state dir) rarely hand out the same ranges.
func (r *idRanges) get(stateDir string, id spec.ID) (uint32, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.load(stateDir)
	if host, ok := r.byID[id.String()]; ok {
		return host, nil
	}
	h := fnv.New32a()
	h.Write([]byte(stateDir))
	start := h.Sum32() % idRangeSlots
	for i := range uint32(idRangeSlots) {
		host := idRangeFirst + (start+i)%idRangeSlots*idRangeSize
		if _, taken := r.used[host]; !taken {
			r.byID[id.String()], r.used[host] = host, id.String()
			return host, nil
		}
	}
	return 0, fmt.Errorf("all %d host id ranges for user namespaces are in use; delete workloads, or spawn with security userns host", idRangeSlots)
}

// claim records that id holds the range starting at host, as its
// config.json says.
func (r *idRanges) claim(stateDir string, id spec.ID, host uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.load(stateDir)
	if other, taken := r.used[host]; taken && other != id.String() {
		return fmt.Errorf("host id range %d is recorded for both %s and %s; delete one of them", host, other, id)
	}
	r.byID[id.String()], r.used[host] = host, id.String()
	return nil
}

// release frees id's range once its config.json is gone.
func (r *idRanges) release(id spec.ID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if host, ok := r.byID[id.String()]; ok {
		delete(r.byID, id.String())
		delete(r.used, host)
	}
}

// hostRoot is the host uid of root in s's user namespace, if it has one.
func hostRoot(s *specs.Spec) (uint32, bool) {
	if s == nil || s.Linux == nil {
		return 0, false
	}
	for _, m := range s.Linux.UIDMappings {
		if m.ContainerID == 0 {
			return m.HostID, true
		}
	}
	return 0, false
}

// searchableByAll makes dir and its parents searchable (o+x, which lists
// nothing) for a workload's root, which is an unprivileged host uid: the
// runtime resolves the rootfs and the bind-mounted files as that uid. Only
// directories owned by host root are changed; any other one is an error
// that names it.
func searchableByAll(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("user namespace: %w", err)
		}
		if mode := fi.Mode().Perm(); mode&0o001 == 0 {
			if uid, ok := ownerOf(fi); !ok || uid != 0 {
				return fmt.Errorf("user namespace: %s is not searchable by other users (mode %o), so a workload's root, an unprivileged host uid, cannot reach its rootfs; chmod o+x it, or choose another --data-dir", d, mode)
			}
			keep := fi.Mode() & (os.ModePerm | os.ModeSetuid | os.ModeSetgid | os.ModeSticky)
			if err := os.Chmod(d, keep|0o001); err != nil {
				return fmt.Errorf("user namespace: make %s searchable: %w", d, err)
			}
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// errNoIDMap says the kernel or filesystem cannot idmap the image rootfs.
var errNoIDMap = errors.New("idmapped mounts are not supported here")

// ownerOf is the uid that owns fi's file.
func ownerOf(fi os.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}
