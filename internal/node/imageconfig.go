package node

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// imageConfig is the image's config with what the spec replaces of it:
// the entrypoint, the working directory and the user. Every driver reads
// these from Config.ImageConfig, so one place serves every isolation.
func imageConfig(c v1.Config, s spec.Spec) v1.Config {
	if len(s.Entrypoint) > 0 {
		c.Entrypoint = slices.Clone(s.Entrypoint)
		// As Docker does: a new entrypoint drops the image's CMD, which
		// was written for the old one; arguments come from the spec.
		c.Cmd = nil
	}
	if s.Workdir != "" {
		c.WorkingDir = s.Workdir
	}
	if s.User != "" {
		c.User = s.User
	}
	return c
}

// exposedPort is the port a workload spawned without ports is served on,
// behind public ports 80 and 443: the lowest TCP port the image's
// ExposedPorts names, 0 if it names none or the spec has ports.
func exposedPort(c v1.Config, s spec.Spec) uint16 {
	if len(s.Ports) > 0 {
		return 0
	}
	var best uint16
	for k := range c.ExposedPorts {
		num, proto, _ := strings.Cut(k, "/")
		if proto != "" && proto != "tcp" {
			continue
		}
		n, err := strconv.ParseUint(num, 10, 16)
		if err != nil || n == 0 {
			continue
		}
		if best == 0 || uint16(n) < best {
			best = uint16(n)
		}
	}
	return best
}

// readyPort is the port whose first accepted connection makes a workload
// ready: its first mapped port, or the image's exposed one; 0 for one
// that serves nothing, which is ready once it runs.
func readyPort(s spec.Spec, o workload.Observation) uint16 {
	if len(s.Ports) > 0 {
		return s.Ports[0].Target
	}
	return o.ExposedPort
}

// notListening says why a workload did not become ready within wait: the
// port it was meant to listen on, and the TCP ports it listens on instead,
// read from its network namespace (/proc/<pid>/net/tcp of a container's
// process, or, for an isolation with its own network stack, the same
// files read through exec).
func (n *Node) notListening(ctx context.Context, id spec.ID, s spec.Spec, o workload.Observation, wait time.Duration) string {
	msg := fmt.Sprintf("not listening on %d after %s", readyPort(s, o), wait.Round(time.Second))
	var tables []byte
	if s.Isolation == spec.IsolationContainer && o.Pid > 0 {
		for _, f := range []string{"tcp", "tcp6"} {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", o.Pid, f))
			tables = append(tables, b...)
		}
	} else if drv := n.Drivers[s.Isolation]; drv != nil && drv.Capabilities().Exec {
		var out bytes.Buffer
		ectx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, _ = drv.Exec(ectx, id, driver.ExecConfig{Args: []string{"cat", "/proc/net/tcp", "/proc/net/tcp6"}, IO: driver.IO{Stdout: &out}})
		tables = out.Bytes()
	}
	switch ports := listeningPorts(tables); {
	case len(tables) == 0:
		return msg + "; check its logs and --ports"
	case len(ports) == 0:
		return msg + "; it listens on no TCP port; check its logs"
	default:
		names := make([]string, len(ports))
		for i, p := range ports {
			names[i] = strconv.Itoa(int(p))
		}
		return msg + "; it listens on " + strings.Join(names, ", ") + ": set --ports to one of them"
	}
}

// listeningPorts reads the local ports in state LISTEN (0A) from the
// kernel's /proc/net/tcp and tcp6 tables, sorted, each once.
func listeningPorts(tables []byte) []uint16 {
	var ports []uint16
	sc := bufio.NewScanner(bytes.NewReader(tables))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || f[3] != "0A" {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			continue
		}
		if !slices.Contains(ports, uint16(p)) {
			ports = append(ports, uint16(p))
		}
	}
	slices.Sort(ports)
	return ports
}
