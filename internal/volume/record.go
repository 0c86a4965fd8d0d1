package volume

import (
	"errors"
	"time"
)

// Record is a volume as the cluster state keeps it: the node that holds
// its data, which every workload that mounts it runs on.
type Record struct {
	Name      string    `json:"name"`
	Node      string    `json:"node"`
	SizeMiB   int64     `json:"size_mib"`
	CreatedAt time.Time `json:"created_at"`
}

// Info is a volume as the API shows it: its record and the workloads
// that mount it.
type Info struct {
	Record
	UsedBy []string `json:"used_by"`
}

// ErrExists means a volume of that name exists in the cluster.
var ErrExists = errors.New("volume already exists")

// ErrInUse means a workload mounts the volume (in any state: a stopped
// one may start again), so it cannot be removed.
var ErrInUse = errors.New("volume is in use")

// ErrElsewhere means a workload's volumes live on another node than the
// one it would run on, or on several nodes.
var ErrElsewhere = errors.New("volume lives on another node")
