// Package slurm reads what a Slurm job was given on this machine, so that a
// node started by a batch job offers its allocation, not the whole host.
package slurm

import (
	"fmt"
	"strconv"
	"strings"
)

// Capacity is a node's share of the machine.
type Capacity struct {
	Cores     float64
	MemoryMiB int64
}

// FromEnv reads the allocation from Slurm's variables through getenv. ok is
// false outside a job (no SLURM_JOB_ID). Within one, cores come from
// SLURM_CPUS_ON_NODE, and memory from SLURM_MEM_PER_NODE, else
// SLURM_MEM_PER_CPU times the cores; a part Slurm does not give is 0,
// which leaves the machine's own figure.
func FromEnv(getenv func(string) string) (c Capacity, ok bool, err error) {
	if getenv("SLURM_JOB_ID") == "" {
		return Capacity{}, false, nil
	}
	if v := getenv("SLURM_CPUS_ON_NODE"); v != "" {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 16)
		if err != nil || n == 0 {
			return Capacity{}, true, fmt.Errorf("SLURM_CPUS_ON_NODE=%q is not a positive count of CPUs", v)
		}
		c.Cores = float64(n)
	}
	if v := getenv("SLURM_MEM_PER_NODE"); v != "" {
		if c.MemoryMiB, err = mebibytes("SLURM_MEM_PER_NODE", v); err != nil {
			return Capacity{}, true, err
		}
	} else if v := getenv("SLURM_MEM_PER_CPU"); v != "" && c.Cores > 0 {
		per, err := mebibytes("SLURM_MEM_PER_CPU", v)
		if err != nil {
			return Capacity{}, true, err
		}
		c.MemoryMiB = per * int64(c.Cores)
	}
	return c, true, nil
}

// mebibytes reads Slurm's memory figure: MiB, or with a K, M, G or T
// suffix. Slurm's 0 ("all the node's memory") is 0 here too.
func mebibytes(name, v string) (int64, error) {
	s := strings.ToUpper(strings.TrimSpace(v))
	mult, div := int64(1), int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		div = 1024
	case strings.HasSuffix(s, "M"):
	case strings.HasSuffix(s, "G"):
		mult = 1024
	case strings.HasSuffix(s, "T"):
		mult = 1024 * 1024
	}
	s = strings.TrimRight(s, "KMGT")
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > 1<<40 {
		return 0, fmt.Errorf("%s=%q is not a memory size in MiB", name, v)
	}
	return n * mult / div, nil
}
