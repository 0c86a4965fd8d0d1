// Package node is the daemon's core: it turns the desired state of the
// workloads placed on this node into running workloads, and keeps the
// proxy's routes in step with them.
package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/image"
	"github.com/hypercore-dev/hypercore/internal/keylock"
	"github.com/hypercore-dev/hypercore/internal/network"
	"github.com/hypercore-dev/hypercore/internal/proxy"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
)

// ErrNoCapacity means no node can fit the request.
var ErrNoCapacity = errors.New("no node has room for this workload")

// ErrUnsupported means the node cannot run the requested isolation.
var ErrUnsupported = errors.New("isolation not available")

// Config is how a node is set up.
type Config struct {
	// Name identifies the node in listings; the hostname by default.
	Name string
	// BaseDomain is the domain workloads are served under: <id>.<base>.
	BaseDomain string
	// ReadyTimeout bounds how long Spawn waits for the first port to
	// accept a connection before answering anyway.
	ReadyTimeout time.Duration
	// StopTimeout is how long Stop waits after SIGTERM by default.
	StopTimeout time.Duration
	// StatusInterval is how often running workloads are checked.
	StatusInterval time.Duration
	// ImageGCInterval is how often images that no workload on this node
	// uses are deleted (see PruneImages); the first time is at most
	// FirstImageGC after Start. 0 never deletes them by itself.
	ImageGCInterval time.Duration
	Log             *slog.Logger
}

// DefaultImageGCInterval is the daemon's image GC period: often enough
// that a busy node does not fill its disk with images it used for a day,
// rarely enough that an image dropped and spawned again soon after is
// still there.
const DefaultImageGCInterval = time.Hour

// FirstImageGC is how long after Start the first image GC waits, so the
// images of the workloads the cluster is still bringing back here are not
// deleted only to be pulled again.
const FirstImageGC = time.Minute

// Parts are the node's collaborators, made by the caller so tests and the
// daemon can choose them.
type Parts struct {
	Store   store.Workloads
	Images  *image.Store
	Network *network.Manager
	Drivers map[spec.Isolation]driver.Driver
	Routes  *proxy.Table
}

// Node runs the workloads placed on it.
type Node struct {
	cfg Config
	Parts
	log *slog.Logger

	cores     float64
	memoryMiB int64

	placeMu sync.Mutex  // placement decisions see each other's reservations
	locks   keylock.Map // one operation at a time per workload

	// afterImage, when set (by tests), runs in a spawn between taking the
	// image and recording the workload's digest, the window GC must respect.
	afterImage func(*image.Image)

	quit chan struct{}
	bg   sync.WaitGroup // the watcher and the image GC
}

// New returns a node. Call Start to recover state and begin watching.
func New(cfg Config, p Parts) (*Node, error) {
	if cfg.Name == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node: no --node-name and no hostname: %w", err)
		}
		cfg.Name = h
	}
	if cfg.BaseDomain == "" {
		cfg.BaseDomain = "localhost"
	}
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 15 * time.Second
	}
	if cfg.StopTimeout == 0 {
		cfg.StopTimeout = 10 * time.Second
	}
	if cfg.StatusInterval == 0 {
		cfg.StatusInterval = time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Node{
		cfg: cfg, Parts: p, log: cfg.Log,
		cores: float64(runtime.NumCPU()), memoryMiB: totalMemoryMiB(),
		quit: make(chan struct{}),
	}, nil
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// URL returns where workload id is served.
func (n *Node) URL(id string) string { return id + "." + n.cfg.BaseDomain }

// Start prepares the host network, re-adopts workloads a previous daemon
// left running, and starts watching their status and, with an
// ImageGCInterval, collecting unused images.
func (n *Node) Start(ctx context.Context) error {
	if err := n.Network.Setup(ctx); err != nil {
		return fmt.Errorf("node: network setup: %w", err)
	}
	if err := n.recover(ctx); err != nil {
		return err
	}
	n.bg.Go(n.watch)
	if n.cfg.ImageGCInterval > 0 {
		n.bg.Go(n.collectImages)
	}
	return nil
}

// Close stops watching and collecting images, after a collection under
// way ends. Workloads keep running: the next daemon recovers them.
func (n *Node) Close() {
	close(n.quit)
	n.bg.Wait()
}

// Info describes this node.
type Info struct {
	Name       string
	Cores      float64
	MemoryMiB  int64
	Isolations []spec.Isolation
	BaseDomain string
	// FreeMemoryMiB is what the host reports available now (MemAvailable).
	FreeMemoryMiB int64
	// MicroVMAccel is how microVMs run here, "kvm" or "tcg", when the
	// microVM driver says.
	MicroVMAccel string
}

// Info returns this node's identity and capacity.
func (n *Node) Info() Info {
	info := Info{
		Name: n.cfg.Name, Cores: n.cores, MemoryMiB: n.memoryMiB, BaseDomain: n.cfg.BaseDomain,
		FreeMemoryMiB: meminfoKB("MemAvailable:") / 1024,
	}
	for _, iso := range []spec.Isolation{spec.IsolationContainer, spec.IsolationGVisor, spec.IsolationMicroVM} {
		if _, ok := n.Drivers[iso]; ok {
			info.Isolations = append(info.Isolations, iso)
		}
	}
	// The accelerator is a microVM driver's own business; it is shown
	// when the driver tells.
	if a, ok := n.Drivers[spec.IsolationMicroVM].(interface{ Accel() string }); ok {
		info.MicroVMAccel = a.Accel()
	}
	return info
}

// Spawn places and starts a workload. With DryRun it only places it. The
// start runs to its end even if ctx is cancelled, so a client that hangs up
// never leaves a half-made workload behind.
func (n *Node) Spawn(ctx context.Context, req spec.SpawnRequest) (store.Workload, error) {
	w := store.Workload{
		ID: string(spec.NewID()), Spec: req.Spec, Desired: store.DesiredRunning,
		State: store.StateCreating, Node: n.cfg.Name, CreatedAt: time.Now().UTC(),
	}
	if req.DryRun {
		if err := n.place(w, true); err != nil {
			return store.Workload{}, err
		}
		return w, nil
	}
	return n.Run(ctx, w)
}

// Run starts a workload the cluster placed here, under the id the cluster
// gave it. It is idempotent: when this node already has the id, it answers
// with the local record instead of starting a second copy, so a retried
// call or a reconciler racing the placement call cannot double-start.
func (n *Node) Run(ctx context.Context, w store.Workload) (store.Workload, error) {
	unlock := n.locks.Lock(w.ID)
	defer unlock()
	if cur, err := n.Store.Get(w.ID); err == nil {
		return cur, nil
	}
	w.Node, w.Desired, w.State = n.cfg.Name, store.DesiredRunning, store.StateCreating
	w.IP, w.Pid, w.Ready, w.Error, w.ExitCode = "", 0, false, "", 0
	if err := n.place(w, false); err != nil {
		return store.Workload{}, err
	}
	ctx = context.WithoutCancel(ctx)
	w, err := n.start(ctx, w)
	if err != nil {
		n.teardown(ctx, w.ID)
		if derr := n.Store.Delete(w.ID); derr != nil {
			n.log.Error("run: could not delete the record of a failed start", "id", w.ID, "err", derr)
		}
		return store.Workload{}, err
	}
	return n.waitReady(ctx, w), nil
}

// place checks that this node can run w and, unless dryRun, records it.
// Checks and record happen under one lock, so two spawns never both take
// the last of the memory or the same TCP port.
func (n *Node) place(w store.Workload, dryRun bool) error {
	drv, ok := n.Drivers[w.Spec.Isolation]
	if !ok {
		return fmt.Errorf("%w: node %s cannot run %q workloads (it offers %v)", ErrUnsupported, n.cfg.Name, w.Spec.Isolation, n.Info().Isolations)
	}
	if w.Spec.Tty && !drv.Capabilities().Tty {
		return fmt.Errorf("%w: %q workloads cannot have a terminal (tty); run it without one and use exec -t", ErrUnsupported, w.Spec.Isolation)
	}
	n.placeMu.Lock()
	defer n.placeMu.Unlock()
	if w.Spec.Cores > n.cores {
		return fmt.Errorf("%w: it asks for %v cores and node %s has %v", ErrNoCapacity, w.Spec.Cores, n.cfg.Name, n.cores)
	}
	// One read of the records serves both the memory and the port checks.
	list, err := n.Store.List()
	if err != nil {
		return fmt.Errorf("node: read workloads: %w", err)
	}
	used := n.reservedMemory(list)
	if free := n.memoryMiB - used; w.Spec.MemoryMiB > free {
		return fmt.Errorf("%w: it asks for %d MiB and node %s has %d MiB free of %d", ErrNoCapacity, w.Spec.MemoryMiB, n.cfg.Name, free, n.memoryMiB)
	}
	if err := n.checkTCPPorts(w, list); err != nil {
		return err
	}
	if dryRun {
		return nil
	}
	if err := n.Store.Create(w); err != nil {
		return fmt.Errorf("node: record workload: %w", err)
	}
	return nil
}

// checkTCPPorts fails if a raw TCP public port of w is already held on
// this node: raw TCP carries no host name, so one workload owns the port.
// It runs under placeMu and reads the records, not the routes, so a
// workload placed but not yet started holds its ports too.
func (n *Node) checkTCPPorts(w store.Workload, list []store.Workload) error {
	var want []uint16
	for _, p := range w.Spec.Ports {
		if p.Proto == spec.ProtoTCP {
			want = append(want, p.Public)
		}
	}
	if len(want) == 0 {
		return nil
	}
	for _, other := range list {
		if other.Node != n.cfg.Name || other.Desired != store.DesiredRunning || other.ID == w.ID {
			continue
		}
		for _, p := range other.Spec.Ports {
			if p.Proto == spec.ProtoTCP && slices.Contains(want, p.Public) {
				return fmt.Errorf("%w: public TCP port %d is taken on node %s by workload %s", ErrNoCapacity, p.Public, n.cfg.Name, other.ID)
			}
		}
	}
	for _, port := range want {
		if owner, taken := n.Routes.PortOwner(port); taken {
			return fmt.Errorf("%w: public TCP port %d is taken on node %s by %s", ErrNoCapacity, port, n.cfg.Name, owner)
		}
	}
	return nil
}

// reservedMemory sums the memory of workloads meant to run here. CPU is not
// reserved: a core count is a ceiling that the kernel shares fairly, while
// memory cannot be taken back once used.
func (n *Node) reservedMemory(list []store.Workload) int64 {
	var sum int64
	for _, w := range list {
		if w.Node == n.cfg.Name && w.Desired == store.DesiredRunning {
			sum += w.Spec.MemoryMiB
		}
	}
	return sum
}

// start pulls, networks, creates and starts w, recording each result.
func (n *Node) start(ctx context.Context, w store.Workload) (store.Workload, error) {
	drv := n.Drivers[w.Spec.Isolation]
	if drv == nil {
		return w, fmt.Errorf("%w: node %s cannot run %q workloads", ErrUnsupported, n.cfg.Name, w.Spec.Isolation)
	}
	t0 := time.Now()
	// The pin keeps the image from GC until the record below names its
	// digest; from then on the record keeps it. A pin rather than GC
	// sparing recently pulled images: any window is a guess that a slow
	// spawn (a large pull, mkfs of a microVM disk) can outlast, and it
	// would spare images nobody uses; the pin lasts exactly as long as
	// the spawn.
	img, release, err := n.Images.Acquire(ctx, w.Spec.Image, nil)
	if err != nil {
		return w, err
	}
	defer release()
	if n.afterImage != nil {
		n.afterImage(img)
	}
	t1 := time.Now()
	att, err := n.Network.Attach(ctx, w.ID)
	if err != nil {
		return w, fmt.Errorf("node: network for %s: %w", w.ID, err)
	}
	t2 := time.Now()
	cfg := n.driverConfig(w, img, att)
	if err := drv.Create(ctx, cfg); err != nil {
		return w, fmt.Errorf("node: create %s: %w", w.ID, err)
	}
	t3 := time.Now()
	if err := drv.Start(ctx, w.ID); err != nil {
		return w, fmt.Errorf("node: start %s: %w", w.ID, err)
	}
	t4 := time.Now()
	st, err := drv.Status(ctx, w.ID)
	if err != nil {
		return w, fmt.Errorf("node: status of %s: %w", w.ID, err)
	}
	w, err = n.Store.Update(w.ID, func(r *store.Workload) error {
		r.State, r.IP, r.Pid, r.ImageDigest, r.Error = store.StateRunning, att.IP.String(), st.Pid, img.Digest, ""
		r.Ready = len(r.Spec.Ports) == 0
		return nil
	})
	if err != nil {
		return w, fmt.Errorf("node: record %s: %w", w.ID, err)
	}
	n.setRoute(w)
	n.log.Info("workload started", "id", w.ID, "image", w.Spec.Image, "ip", w.IP, "pid", w.Pid,
		"image_ms", ms(t1.Sub(t0)), "network_ms", ms(t2.Sub(t1)), "create_ms", ms(t3.Sub(t2)), "start_ms", ms(t4.Sub(t3)))
	return w, nil
}

func (n *Node) driverConfig(w store.Workload, img *image.Image, att network.Attachment) driver.Config {
	return driver.Config{
		ID: w.ID, Spec: w.Spec, Rootfs: img.Rootfs, ImageConfig: img.Config,
		Network:  driver.Network{NetNSPath: att.NetNSPath, IP: att.IP.String()},
		Hostname: w.ID[:8],
	}
}

// waitReady waits until w's first port accepts a connection, so a caller
// that is answered can use the URL at once. Past ReadyTimeout it answers
// anyway; the watcher marks the workload ready later.
func (n *Node) waitReady(ctx context.Context, w store.Workload) store.Workload {
	if w.Ready {
		return w
	}
	deadline := time.Now().Add(n.cfg.ReadyTimeout)
	for time.Now().Before(deadline) {
		if n.probe(w) {
			return n.markReady(w.ID)
		}
		select {
		case <-ctx.Done():
			return w
		case <-time.After(15 * time.Millisecond):
		}
	}
	n.log.Warn("workload not ready yet; answering anyway", "id", w.ID, "timeout", n.cfg.ReadyTimeout)
	return w
}

func (n *Node) probe(w store.Workload) bool {
	if len(w.Spec.Ports) == 0 || w.IP == "" {
		return true
	}
	addr := net.JoinHostPort(w.IP, strconv.Itoa(int(w.Spec.Ports[0].Target)))
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func (n *Node) markReady(id string) store.Workload {
	w, err := n.Store.Update(id, func(r *store.Workload) error { r.Ready = true; return nil })
	if err != nil {
		n.log.Error("record readiness", "id", id, "err", err)
		return w
	}
	n.setRoute(w)
	return w
}

func (n *Node) setRoute(w store.Workload) {
	if len(w.Spec.Ports) == 0 || w.IP == "" {
		n.Routes.Delete(w.ID)
		return
	}
	// HTTP ports share the HTTP(S) proxy; TCP ports get a listener each.
	r := proxy.Route{ID: w.ID, Ready: w.Ready, HTTP: map[uint16]string{}, TCP: map[uint16]string{}}
	for _, p := range w.Spec.Ports {
		target := net.JoinHostPort(w.IP, strconv.Itoa(int(p.Target)))
		if p.Proto == spec.ProtoTCP {
			r.TCP[p.Public] = target
		} else {
			r.HTTP[p.Public] = target
		}
	}
	n.Routes.Set(r)
}

// teardown removes every host resource of id. Each step tolerates a
// missing piece, so it is safe after any partial start.
func (n *Node) teardown(ctx context.Context, id string) {
	n.Routes.Delete(id)
	for _, d := range n.Drivers {
		if err := d.Delete(ctx, id); err != nil && !errors.Is(err, driver.ErrNotFound) {
			n.log.Warn("teardown: driver delete", "id", id, "err", err)
		}
	}
	if err := n.Network.Release(ctx, id); err != nil {
		n.log.Warn("teardown: network release", "id", id, "err", err)
	}
}

// Get returns the record of id.
func (n *Node) Get(id string) (store.Workload, error) { return n.Store.Get(id) }

// List returns every workload.
func (n *Node) List() ([]store.Workload, error) { return n.Store.List() }

// Stop ends id's process, takes it off the proxy and frees its network. The
// record and logs stay until Remove.
// A timeout of 0 means the node's default.
func (n *Node) Stop(ctx context.Context, id string, timeout time.Duration) (store.Workload, error) {
	if timeout <= 0 {
		timeout = n.cfg.StopTimeout
	}
	return n.stop(ctx, id, timeout)
}

// stop is Stop with an exact grace period; 0 kills at once.
func (n *Node) stop(ctx context.Context, id string, timeout time.Duration) (store.Workload, error) {
	unlock := n.locks.Lock(id)
	defer unlock()
	w, err := n.Store.Get(id)
	if err != nil {
		return w, err
	}
	ctx = context.WithoutCancel(ctx)
	// Desired state first: if we crash halfway, recovery finishes the stop.
	if _, err := n.Store.Update(id, func(r *store.Workload) error { r.Desired = store.DesiredStopped; return nil }); err != nil {
		return w, err
	}
	n.Routes.Delete(id)
	if drv := n.Drivers[w.Spec.Isolation]; drv != nil {
		if err := drv.Stop(ctx, id, timeout); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return w, fmt.Errorf("node: stop %s: %w", id, err)
		}
	}
	if err := n.Network.Release(ctx, id); err != nil {
		return w, fmt.Errorf("node: release network of %s: %w", id, err)
	}
	w, err = n.Store.Update(id, func(r *store.Workload) error {
		r.State, r.Pid, r.Ready, r.IP = store.StateStopped, 0, false, ""
		return nil
	})
	n.log.Info("workload stopped", "id", id)
	return w, err
}

// Remove kills id at once if it runs, as `docker rm -f` does, and deletes
// every trace of it. Stop first for a graceful end.
func (n *Node) Remove(ctx context.Context, id string) error {
	w, err := n.Store.Get(id)
	if err != nil {
		return err
	}
	if w.Desired == store.DesiredRunning || w.State != store.StateStopped {
		if _, err := n.stop(ctx, id, 0); err != nil {
			return err
		}
	}
	unlock := n.locks.Lock(id)
	defer unlock()
	ctx = context.WithoutCancel(ctx)
	n.teardown(ctx, id)
	if err := n.Store.Delete(id); err != nil {
		return err
	}
	n.log.Info("workload removed", "id", id)
	return nil
}

// Pull fetches ref into the image store, reporting progress.
func (n *Node) Pull(ctx context.Context, ref string, progress func(image.Progress)) (*image.Image, error) {
	return n.Images.Pull(ctx, ref, progress)
}

// PruneImages deletes the images no workload on this node uses, with their
// blobs, rootfs and microVM disks, and logs what went. An image is in use
// if a workload recorded here (in any state: a stopped one may start
// again) names it by digest or by the ref it was spawned from, or if a
// spawn holds it (image.Store.Acquire) before its record names it. So an
// image pulled by hand and not spawned yet goes too.
func (n *Node) PruneImages(ctx context.Context) (image.GCResult, error) {
	if err := ctx.Err(); err != nil {
		return image.GCResult{}, err
	}
	res, err := n.Images.GC(n.imagesInUse)
	if len(res.Removed) > 0 || res.Freed > 0 {
		n.log.Info("images collected", "removed", res.Removed, "freed_bytes", res.Freed)
	} else {
		n.log.Debug("image GC: nothing to collect")
	}
	if err != nil {
		return res, fmt.Errorf("node: image GC: %w", err)
	}
	return res, nil
}

// imagesInUse names the images of the workloads in this node's store: the
// recorded digest, which recovery re-adopts a workload with, and the ref,
// which a restart of the workload resolves again. Every record counts,
// whatever node name it carries: the store is this node's own, and a node
// whose name changed (--node-name) still recovers its older workloads.
func (n *Node) imagesInUse() ([]string, error) {
	list, err := n.Store.List()
	if err != nil {
		return nil, fmt.Errorf("read workloads: %w", err)
	}
	var names []string
	for _, w := range list {
		names = append(names, w.Spec.Image)
		if w.ImageDigest != "" {
			names = append(names, w.ImageDigest)
		}
	}
	return names, nil
}

// collectImages runs PruneImages every ImageGCInterval until Close.
func (n *Node) collectImages() {
	t := time.NewTimer(min(FirstImageGC, n.cfg.ImageGCInterval))
	defer t.Stop()
	for {
		select {
		case <-n.quit:
			return
		case <-t.C:
		}
		if _, err := n.PruneImages(context.Background()); err != nil {
			n.log.Warn("image GC failed; it runs again next interval", "err", err, "interval", n.cfg.ImageGCInterval)
		}
		t.Reset(n.cfg.ImageGCInterval)
	}
}

func (n *Node) driverFor(id string) (driver.Driver, error) {
	w, err := n.Store.Get(id)
	if err != nil {
		return nil, err
	}
	drv := n.Drivers[w.Spec.Isolation]
	if drv == nil {
		return nil, fmt.Errorf("%w: %s on node %s", ErrUnsupported, w.Spec.Isolation, n.cfg.Name)
	}
	return drv, nil
}

// Logs streams id's output.
func (n *Node) Logs(ctx context.Context, id string, opts driver.LogOptions) (io.ReadCloser, error) {
	drv, err := n.driverFor(id)
	if err != nil {
		return nil, err
	}
	return drv.Logs(ctx, id, opts)
}

// Exec runs a process in id and returns its exit code.
func (n *Node) Exec(ctx context.Context, id string, cfg driver.ExecConfig) (int, error) {
	drv, err := n.driverFor(id)
	if err != nil {
		return -1, err
	}
	return drv.Exec(ctx, id, cfg)
}

// Attach connects to id's main process.
func (n *Node) Attach(ctx context.Context, id string, stdio driver.IO) error {
	drv, err := n.driverFor(id)
	if err != nil {
		return err
	}
	return drv.Attach(ctx, id, stdio)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func totalMemoryMiB() int64 {
	if kb := meminfoKB("MemTotal:"); kb > 0 {
		return kb / 1024
	}
	return 1024
}

// meminfoKB reads one field of /proc/meminfo, in kB; 0 if it is missing.
func meminfoKB(field string) int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}
