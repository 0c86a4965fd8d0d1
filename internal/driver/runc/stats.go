package runc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Stats reads the workload's cgroup files directly, which works the same
// for runc and crun (crun has no "events --stats"). A workload with no
// cgroup (stopped, or forgotten by the runtime) reports zero use.
func (d *Driver) Stats(ctx context.Context, id spec.ID) (driver.Stats, error) {
	if _, err := os.Stat(d.paths(id).config); err != nil {
		return driver.Stats{}, fmt.Errorf("stats of %s: %w", id, driver.ErrNotFound)
	}
	rel := d.cgroupPath(id)
	var st driver.Stats
	var err error
	if detectCgroups() == cgroupUnified {
		st, err = statsV2(filepath.Join(cgroupRoot, rel))
	} else {
		st, err = statsV1(rel)
	}
	if errors.Is(err, os.ErrNotExist) {
		return driver.Stats{}, nil
	}
	if err != nil {
		return driver.Stats{}, fmt.Errorf("stats of %s: %w", id, err)
	}
	return st, nil
}

func statsV1(rel string) (driver.Stats, error) {
	var st driver.Stats
	var err error
	file := func(controller, name string) string {
		return filepath.Join(v1Hierarchy(controller), rel, name)
	}
	if st.CPUNanos, err = readUint(file("cpuacct", "cpuacct.usage")); err != nil {
		return st, err
	}
	usage, err := readUint(file("memory", "memory.usage_in_bytes"))
	if err != nil {
		return st, err
	}
	// Like docker stats: page cache the kernel can drop at once is not use.
	inactive, _ := statField(file("memory", "memory.stat"), "total_inactive_file")
	st.MemoryBytes = usage - min(inactive, usage)
	if st.MemoryLimit, err = readUint(file("memory", "memory.limit_in_bytes")); err != nil {
		return st, err
	}
	if st.Pids, err = readUint(file("pids", "pids.current")); err != nil {
		return st, err
	}
	return st, nil
}

func statsV2(dir string) (driver.Stats, error) {
	var st driver.Stats
	usec, err := statField(filepath.Join(dir, "cpu.stat"), "usage_usec")
	if err != nil {
		return st, err
	}
	st.CPUNanos = usec * 1000
	usage, err := readUint(filepath.Join(dir, "memory.current"))
	if err != nil {
		return st, err
	}
	inactive, _ := statField(filepath.Join(dir, "memory.stat"), "inactive_file")
	st.MemoryBytes = usage - min(inactive, usage)
	if st.MemoryLimit, err = readUint(filepath.Join(dir, "memory.max")); err != nil {
		return st, err
	}
	if st.Pids, err = readUint(filepath.Join(dir, "pids.current")); err != nil {
		return st, err
	}
	return st, nil
}

// readUint reads a cgroup file holding one number; "max" reads as the
// largest value.
func readUint(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return math.MaxUint64, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", path, err)
	}
	return n, nil
}

// statField reads one "key value" line of a cgroup stat file.
func statField(path, key string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), " ")
		if ok && k == key {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no %s", path, key)
}
