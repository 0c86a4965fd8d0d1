// Package nodeid gives each data dir a node id of its own, made once and
// kept, and names after it what a node owns on its host: the workload
// bridge, the nftables tables and the cgroup parent. Two nodes on one host
// (each with its own data dir) then never share them, whatever their
// hostname or node name.
package nodeid

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/atomicfile"
)

// File is where the id and the names are kept, in the data dir.
const File = "node-id"

// Names are a node's id and the host resources named after it.
type Names struct {
	// ID is 16 random hex digits.
	ID string `json:"id"`
	// Bridge is the workload bridge: "hcb" and the id's first 8 digits.
	Bridge string `json:"bridge"`
	// Table names the nftables tables: "hypercore-" and the id.
	Table string `json:"table"`
	// CgroupParent holds the workloads' cgroups: "/hypercore/" and the id.
	CgroupParent string `json:"cgroup_parent"`
}

var idPattern = regexp.MustCompile(`^[0-9a-f]{16}$`)

// namePattern bounds what a kept name may be: the file is the node's own,
// but a damaged one must not name a path outside /hypercore or an
// interface the kernel refuses.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Load returns the names kept in dataDir, making and keeping new ones at
// the first start. A data dir that a node used before ids existed (it has
// state.db) keeps the names that node had: bridge hc0, tables hypercore
// and the cgroup parent /hypercore/<legacyName>, so its running workloads
// stay where they are.
func Load(dataDir, legacyName string) (Names, error) {
	path := filepath.Join(dataDir, File)
	data, err := os.ReadFile(path)
	if err == nil {
		var n Names
		if err := json.Unmarshal(data, &n); err != nil || !n.valid() {
			return Names{}, fmt.Errorf("node id file %s is damaged (%v); restore it, or delete it to give this data dir new names (its workloads' bridge and cgroups change)", path, err)
		}
		return n, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return Names{}, fmt.Errorf("read node id: %w", err)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Names{}, fmt.Errorf("make node id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	n := Names{ID: id, Bridge: "hcb" + id[:8], Table: "hypercore-" + id, CgroupParent: "/hypercore/" + id}
	if _, err := os.Stat(filepath.Join(dataDir, "state.db")); err == nil && namePattern.MatchString(legacyName) {
		n.Bridge, n.Table, n.CgroupParent = "hc0", "hypercore", "/hypercore/"+legacyName
	}
	data, err = json.MarshalIndent(n, "", "  ")
	if err != nil {
		return Names{}, err
	}
	if err := atomicfile.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return Names{}, fmt.Errorf("keep node id: %w", err)
	}
	return n, nil
}

func (n Names) valid() bool {
	parent, ok := strings.CutPrefix(n.CgroupParent, "/hypercore/")
	return idPattern.MatchString(n.ID) && len(n.Bridge) <= 15 && namePattern.MatchString(n.Bridge) &&
		namePattern.MatchString(n.Table) && ok && namePattern.MatchString(parent) && parent != ".." && parent != "."
}
