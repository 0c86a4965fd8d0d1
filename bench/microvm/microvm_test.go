// Package microvm benchmarks a microVM spawn up to the first HTTP 200:
// hypercore (POST /spawn with "isolation":"microvm", then the page through
// its proxy) against a raw QEMU boot of the same kernel, initramfs and
// image disk to the same point (the guest agent configured, httpd's first
// 200 straight from the guest), interleaved run by run in one network
// namespace. It also reports QEMU's host RSS per VM against the memory
// the VM was given.
//
// It runs only with HYPERCORE_BENCH=1 and as root; bench/microvm/run.sh
// runs it.
package microvm

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/hypercore-dev/hypercore/internal/driver/qemu"
	"github.com/hypercore-dev/hypercore/internal/guest"
	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

const (
	pollEvery    = 2 * time.Millisecond
	readyTimeout = 90 * time.Second
	defaultRuns  = 10
	memoryMiB    = 256
	// The raw VM's link: a bridge in the bench namespace and the guest.
	rawBridge  = "rawbr0"
	rawTap     = "rawtap0"
	rawHostIP  = "10.99.0.1"
	rawGuestIP = "10.99.0.2"
)

type sample struct {
	total time.Duration
	rss   uint64
}

func TestMicroVMBench(t *testing.T) {
	if os.Getenv("HYPERCORE_BENCH") != "1" {
		t.Skip("benchmark: set HYPERCORE_BENCH=1 to run it (bench/microvm/run.sh does)")
	}
	if os.Geteuid() != 0 {
		t.Skip("benchmark: needs root (network namespaces, TAPs)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("benchmark: qemu-system-x86_64 is not installed (make deps)")
	}
	runs := testutil.EnvInt(t, "RUNS", defaultRuns)

	img := testutil.HTTPDImage(t)
	ns := harness.NewNetNS(t)
	// Built as `make build` does (static, stripped): that binary is the
	// guest's /init, so its size is part of every boot.
	bin := filepath.Join(t.TempDir(), "hypercore")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, "./cmd/hypercore")
	build.Dir, build.Env = "../..", append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hypercore: %v\n%s", err, out)
	}
	ref := harness.StartRegistry(t, ns, img)
	dataDir := filepath.Join(t.TempDir(), "data")
	node := harness.StartNode(t, ns, bin, dataDir)
	hc := &hypercoreVM{node: node, client: ns.Client(),
		body: fmt.Sprintf(`{"cores":1,"memory":%d,"image_ref":"%s","ports":{"80":8080},"isolation":"microvm"}`, memoryMiB, ref)}

	// Warm-up: pulls the image and makes its ext4 disk, which the raw
	// boot then uses too.
	if _, err := hc.run(); err != nil {
		t.Fatalf("hypercore warm-up: %v\n%s", err, node.Log())
	}
	raw := newRaw(t, ns, bin, dataDir, img)
	if _, err := raw.run(); err != nil {
		t.Fatalf("raw QEMU warm-up: %v", err)
	}

	var hcs, raws []sample
	for i := 0; i < runs; i++ {
		s, err := hc.run()
		if err != nil {
			t.Fatalf("hypercore run %d: %v\n%s", i, err, node.Log())
		}
		hcs = append(hcs, s)
		if s, err = raw.run(); err != nil {
			t.Fatalf("raw QEMU run %d: %v", i, err)
		}
		raws = append(raws, s)
	}
	settled := hc.settledRSS(t, 10*time.Second)
	t.Log("\n" + report(raw.accel, hcs, raws) +
		fmt.Sprintf("host RSS of one VM 10 s after its first 200 (free page reporting done): %.1f MiB\n", float64(settled)/(1<<20)) +
		phases(node.Log()))
}

// settledRSS spawns one more VM and reads QEMU's RSS after wait, when the
// guest has reported the memory it freed while booting.
func (h *hypercoreVM) settledRSS(t *testing.T, wait time.Duration) uint64 {
	t.Helper()
	code, out := h.node.API("POST", "/spawn", h.body)
	var a struct{ ID string }
	if code != 200 || json.Unmarshal([]byte(out), &a) != nil {
		t.Fatalf("POST /spawn: %d %s", code, out)
	}
	defer h.node.API("DELETE", "/v1/workloads/"+a.ID, "")
	time.Sleep(wait)
	_, rec := h.node.API("GET", "/v1/workloads/"+a.ID, "")
	var w struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(rec), &w); err != nil || w.Pid <= 0 {
		t.Fatalf("workload record %s: %v", rec, err)
	}
	return qemu.RSS(w.Pid)
}

// phases is the median of each per-spawn timing the daemon logs with
// "workload started", over the timed runs (the warm-up is the first).
func phases(log string) string {
	keys := []string{"image_ms", "network_ms", "create_ms", "start_ms"}
	vals := map[string][]float64{}
	first := true
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, "workload started") {
			continue
		}
		if first {
			first = false
			continue
		}
		for _, k := range keys {
			if m := regexp.MustCompile(k + `=([0-9.]+)`).FindStringSubmatch(l); m != nil {
				v, _ := strconv.ParseFloat(m[1], 64)
				vals[k] = append(vals[k], v)
			}
		}
	}
	var b strings.Builder
	b.WriteString("hypercore phases, median ms (start = boot until the agent runs the workload):\n")
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-12s %8.1f\n", k, testutil.Median(vals[k]))
	}
	return b.String()
}

func report(accel string, hcs, raws []sample) string {
	ms := func(ss []sample) []float64 {
		var v []float64
		for _, s := range ss {
			v = append(v, float64(s.total.Microseconds())/1000)
		}
		return v
	}
	mib := func(ss []sample) float64 {
		var v []float64
		for _, s := range ss {
			v = append(v, float64(s.rss)/(1<<20))
		}
		return testutil.Median(v)
	}
	h, r := testutil.Median(ms(hcs)), testutil.Median(ms(raws))
	var b strings.Builder
	fmt.Fprintf(&b, "accelerator: %s, %d runs each, VMs of 1 vCPU and %d MiB\n", accel, len(hcs), memoryMiB)
	fmt.Fprintf(&b, "%-34s %10s %10s %10s %14s\n", "contender", "median_ms", "min_ms", "max_ms", "host RSS MiB")
	for _, c := range []struct {
		name string
		s    []sample
	}{{"hypercore spawn -> 200 via proxy", hcs}, {"raw QEMU boot -> 200 from guest", raws}} {
		v := ms(c.s)
		lo, hi := v[0], v[0]
		for _, x := range v {
			lo, hi = min(lo, x), max(hi, x)
		}
		fmt.Fprintf(&b, "%-34s %10.1f %10.1f %10.1f %14.1f\n", c.name, testutil.Median(v), lo, hi, mib(c.s))
	}
	fmt.Fprintf(&b, "hypercore / raw QEMU: median %.2fx (goal <= 1.15x)\n", h/r)
	fmt.Fprintf(&b, "host RSS per VM: %.1f MiB of %d MiB configured (%.0f%%)\n", mib(hcs), memoryMiB, 100*mib(hcs)/memoryMiB)
	return b.String()
}

// hypercoreVM spawns through the node's API and reads the page through
// its proxy.
type hypercoreVM struct {
	node   *harness.Node
	client *http.Client
	body   string
}

func (h *hypercoreVM) run() (sample, error) {
	t0 := time.Now()
	code, out := h.node.API("POST", "/spawn", h.body)
	if code != 200 {
		return sample{}, fmt.Errorf("POST /spawn: %d %s", code, out)
	}
	var a struct{ ID, URL string }
	if err := json.Unmarshal([]byte(out), &a); err != nil || a.ID == "" {
		return sample{}, fmt.Errorf("POST /spawn answered %q: %v", out, err)
	}
	defer h.node.API("DELETE", "/v1/workloads/"+a.ID, "")
	if err := waitOK(h.client, "http://127.0.0.1:80/", a.URL, t0.Add(readyTimeout)); err != nil {
		return sample{}, err
	}
	s := sample{total: time.Since(t0)}
	_, rec := h.node.API("GET", "/v1/workloads/"+a.ID, "")
	var w struct {
		Pid int `json:"pid"`
	}
	if json.Unmarshal([]byte(rec), &w) == nil && w.Pid > 0 {
		s.rss = qemu.RSS(w.Pid)
	}
	return s, nil
}

// rawQEMU boots the node's own kernel, initramfs and image disk with the
// same QEMU command line the driver uses, but started directly (no
// daemon, no netns of its own, no -daemonize) on a TAP on a bridge in the
// bench namespace; it then configures the agent with the image's httpd.
type rawQEMU struct {
	t      *testing.T
	ns     *harness.NetNS
	d      *qemu.Driver
	accel  string
	disk   string
	dir    string
	proc   guest.Process
	client *http.Client
	mac    string
}

func newRaw(t *testing.T, ns *harness.NetNS, bin, dataDir string, img v1.Image) *rawQEMU {
	t.Helper()
	k, err := qemu.FindKernel(qemu.KernelDir(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	// Same binary and kernel: the initramfs is byte for byte the node's.
	d, err := qemu.New(context.Background(), qemu.Options{StateDir: t.TempDir(), Kernel: k, Agent: bin})
	if err != nil {
		t.Fatal(err)
	}
	nodeInitrd, _ := filepath.Glob(filepath.Join(dataDir, "vms", "initramfs", "*.cpio"))
	if len(nodeInitrd) != 1 || filepath.Base(nodeInitrd[0]) != filepath.Base(d.Initramfs()) {
		t.Fatalf("raw QEMU's initramfs %s is not the node's %v", d.Initramfs(), nodeInitrd)
	}
	disks, _ := filepath.Glob(filepath.Join(dataDir, "images", "ext4", "*.ext4"))
	if len(disks) != 1 {
		t.Fatalf("want the node's one image disk, found %v", disks)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"link", "add", rawBridge, "type", "bridge"},
		{"addr", "add", rawHostIP + "/24", "dev", rawBridge},
		{"link", "set", rawBridge, "up"},
		{"tuntap", "add", rawTap, "mode", "tap"},
		{"link", "set", rawTap, "master", rawBridge},
		{"link", "set", rawTap, "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	return &rawQEMU{
		t: t, ns: ns, d: d, accel: d.Accel(), disk: disks[0], dir: t.TempDir(), client: ns.Client(),
		mac: "52:54:00:12:34:56",
		proc: guest.Process{
			Args: append(append([]string{}, cf.Config.Entrypoint...), cf.Config.Cmd...),
			Env:  append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, cf.Config.Env...),
		},
	}
}

func (r *rawQEMU) run() (sample, error) {
	sock := filepath.Join(r.dir, "agent.sock")
	os.Remove(sock)
	args := r.d.Args("raw", 1, memoryMiB, r.disk, "", sock,
		filepath.Join(r.dir, "output.log"), filepath.Join(r.dir, "status.jsonl"), filepath.Join(r.dir, "console.log"))
	args = append(args,
		"-netdev", "tap,id=net0,ifname="+rawTap+",script=no,downscript=no,vhost=off",
		"-device", "virtio-net-device,netdev=net0,mac="+r.mac)

	t0 := time.Now()
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + r.ns.Name, r.d.QEMU()}, args...)...)
	if err := cmd.Start(); err != nil {
		return sample{}, err
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() { cmd.Process.Kill(); <-exited }()

	ctx, cancel := context.WithDeadline(context.Background(), t0.Add(readyTimeout))
	defer cancel()
	var conn interface{ Close() error }
	c, err := func() (*guest.Client, error) {
		for {
			nc, err := guest.DialUnix(ctx, sock)
			if err == nil {
				conn = nc
				return guest.Handshake(ctx, nc)
			}
			select {
			case <-exited:
				return nil, fmt.Errorf("qemu exited: %w", err)
			case <-ctx.Done():
				return nil, err
			case <-time.After(pollEvery):
			}
		}
	}()
	if err != nil {
		return sample{}, err
	}
	defer conn.Close()
	err = c.Configure(ctx, guest.Config{
		Hostname: "raw", Process: r.proc,
		Network: guest.Network{Address: rawGuestIP + "/24", Gateway: rawHostIP},
	})
	if err != nil {
		return sample{}, err
	}
	if err := waitOK(r.client, "http://"+rawGuestIP+":8080/", "", t0.Add(readyTimeout)); err != nil {
		return sample{}, err
	}
	return sample{total: time.Since(t0), rss: qemu.RSS(cmd.Process.Pid)}, nil
}

// waitOK polls url (with Host host) until it answers 200.
func waitOK(c *http.Client, url, host string, deadline time.Time) error {
	for {
		req, _ := http.NewRequest("GET", url, nil)
		if host != "" {
			req.Host = host
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := c.Do(req.WithContext(ctx))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				cancel()
				return nil
			}
		}
		cancel()
		if time.Now().After(deadline) {
			return fmt.Errorf("no 200 from %s (Host %q) in %s: last %v", url, host, readyTimeout, err)
		}
		time.Sleep(pollEvery)
	}
}
