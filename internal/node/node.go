// Package node runs the workloads the cluster allocates to this host and
// reports what it observes of them. It is told what to run (Run, Stop,
// Remove) and answers with observations, every one of which also goes to
// Config.Report, the one path by which the cluster learns what runs.
//
// It does not place: the scheduler chose this node, and the node's own
// admission check covers only what the scheduler cannot know. It does not
// write proxy routes: they are derived from the observations it reports.
// What it keeps on disk (package store) is only what it needs to re-adopt
// its workloads after a restart.
package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
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
	"github.com/hypercore-dev/hypercore/internal/nodeinfo"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/store"
	"github.com/hypercore-dev/hypercore/internal/volume"
	"github.com/hypercore-dev/hypercore/internal/workload"
)

// ErrNoCapacity means no node can fit the request. The scheduler says it
// for the cluster; a node says it (as ErrPortInUse) only for what the
// scheduler could not see.
var ErrNoCapacity = workload.ErrNoCapacity

// ErrPortInUse means a raw TCP public port the workload asks for is held
// on this host by something that is not a workload (a listener of the
// daemon, another program). It wraps ErrNoCapacity, so callers that retry
// elsewhere on a full node do so here too.
var ErrPortInUse = fmt.Errorf("%w: a public TCP port is in use on the host", ErrNoCapacity)

// ErrUnsupported means the node cannot run the requested isolation, or
// not with the requested options.
var ErrUnsupported = workload.ErrUnsupported

// Config is how a node is set up.
type Config struct {
	// Name identifies the node in listings and in every observation it
	// reports; the hostname by default.
	Name string
	// BaseDomain is the domain workloads are served under: <id>.<base>.
	BaseDomain string
	// APIAddr is where this node's API listens, shown in Info.
	APIAddr string
	// ReadyTimeout bounds how long Run waits for the first port to
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
	// ImageGCGrace is how long the periodic image GC keeps an image after
	// its last use, so that a workload spawned again soon finds it
	// unpacked (and, for microVMs, its disk made). PruneImages, asked for
	// by hand, does not wait.
	ImageGCGrace time.Duration
	// Report receives every change of a workload's observation: creating,
	// running (with IP, pid, image digest and start time), ready, exited
	// (with exit code and end time), stopped, a failed start (exited, with
	// Error), and each workload's state as recovered at Start. Calls are
	// synchronous and, for one workload, in the order the changes
	// happened: the node holds that workload's lock during the call, so
	// Report must not call back into the node about the same workload.
	// Nil discards them; Observations still has the latest.
	Report func(id spec.ID, o workload.Observation)
	// Secrets returns the values of the secrets a spec names, by secret
	// name, for the driver to put in the workload's environment (and in
	// an exec's) and in /run/secrets without writing them to disk. Nil
	// refuses workloads that name secrets.
	Secrets func(ctx context.Context, s spec.Spec) (map[string][]byte, error)
	// Log is where the node logs; nil is slog.Default().
	Log *slog.Logger
	// Cores and MemoryMiB are the capacity the node offers the scheduler
	// (--memory, or a batch job's allocation); 0 is the machine's.
	Cores     float64
	MemoryMiB int64
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

// PortOwners says who other than a workload holds a public TCP port on
// this host. The proxy's table is one; the node only reads it, since the
// routes themselves are derived from observations elsewhere.
type PortOwners interface {
	// PortOwner names what holds port on this host, if anything other
	// than a workload does.
	PortOwner(port uint16) (owner string, taken bool)
}

// Parts are the node's collaborators, made by the caller so tests and the
// daemon can choose them.
type Parts struct {
	Store   store.Records
	Images  *image.Store
	Network *network.Manager
	Drivers map[spec.Isolation]driver.Driver
	// Routes is asked whether a raw TCP public port is free on this host;
	// nil skips that check.
	Routes PortOwners
	// Volumes keeps this node's named volumes; nil refuses workloads
	// that mount one.
	Volumes *volume.Manager
}

// Node runs the workloads allocated to it.
//
// Invariants:
//   - every record in Store is a workload this node was told to run and
//     has not removed; every such workload has an observation in memory
//     once Start returns;
//   - one operation at a time runs per workload (locks), and every
//     observation is reported under that lock, so reports for one
//     workload are in order;
//   - the node never places and never writes routes.
type Node struct {
	cfg Config
	Parts
	log *slog.Logger

	cores     float64
	memoryMiB int64

	locks keylock.Map // one operation at a time per workload

	obsMu sync.Mutex
	obs   map[spec.ID]workload.Observation
	// probes says when the watcher next probes a running workload that
	// is not ready yet; guarded by obsMu.
	probes map[spec.ID]probeSchedule
	// isolation is each started workload's isolation, so the watcher can
	// tell its driver without reading the store; guarded by obsMu.
	isolation map[spec.ID]spec.Isolation

	// afterImage, when set (by tests), runs in a start between taking the
	// image and recording the workload's digest, the window GC must respect.
	afterImage func(*image.Image)
	// restartWait, when set (by tests), replaces a restart's backoff.
	restartWait func(time.Duration) time.Duration

	quit chan struct{}
	bg   sync.WaitGroup // the watcher, the image GC and recovery's starts
	// recoverCtx bounds the starts recovery leaves to the background;
	// Close cancels it (stopRecover).
	recoverCtx  context.Context
	stopRecover context.CancelFunc
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
	if cfg.MemoryMiB <= 0 {
		cfg.MemoryMiB = totalMemoryMiB()
	}
	recoverCtx, stopRecover := context.WithCancel(context.Background())
	n := &Node{
		cfg: cfg, Parts: p, log: cfg.Log, recoverCtx: recoverCtx, stopRecover: stopRecover,
		cores: float64(runtime.NumCPU()), memoryMiB: cfg.MemoryMiB,
		obs:    map[spec.ID]workload.Observation{},
		probes: map[spec.ID]probeSchedule{}, isolation: map[spec.ID]spec.Isolation{},
		quit: make(chan struct{}),
	}
	if cfg.Cores > 0 {
		n.cores = cfg.Cores
	}
	for _, d := range p.Drivers {
		if en, ok := d.(driver.ExitNotifier); ok {
			en.NotifyExit(n.workloadExited)
		}
	}
	return n, nil
}

// Name returns the node's name.
func (n *Node) Name() string { return n.cfg.Name }

// Start prepares the host network, re-adopts the workloads in the store
// (reporting each; those that must start again from scratch are reported
// creating and started in the background), and starts watching their
// status and, with an ImageGCInterval, collecting unused images.
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
	n.stopRecover()
	close(n.quit)
	n.bg.Wait()
}

// Info returns this node's identity and capacity.
func (n *Node) Info() nodeinfo.Info {
	info := nodeinfo.Info{
		Name: n.cfg.Name, Cores: n.cores, MemoryMiB: n.memoryMiB, BaseDomain: n.cfg.BaseDomain,
		FreeMemoryMiB: meminfoKB("MemAvailable:") / 1024, APIAddr: n.cfg.APIAddr,
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

// Observations returns the latest observation of every workload on this
// node.
func (n *Node) Observations() map[spec.ID]workload.Observation {
	n.obsMu.Lock()
	defer n.obsMu.Unlock()
	return maps.Clone(n.obs)
}

// Observation returns the latest observation of id, if the node has it.
func (n *Node) Observation(id spec.ID) (workload.Observation, bool) {
	n.obsMu.Lock()
	defer n.obsMu.Unlock()
	o, ok := n.obs[id]
	return o, ok
}

// report makes o the observation of id and hands it to Config.Report if
// it changed. The caller holds id's lock.
func (n *Node) report(id spec.ID, o workload.Observation) workload.Observation {
	o.Node = n.cfg.Name
	n.obsMu.Lock()
	prev, had := n.obs[id]
	n.obs[id] = o
	n.obsMu.Unlock()
	if had && prev == o {
		return o
	}
	if n.cfg.Report != nil {
		n.cfg.Report(id, o)
	}
	return o
}

// knowIsolation remembers r's isolation for the watcher.
func (n *Node) knowIsolation(r store.Record) {
	n.obsMu.Lock()
	n.isolation[r.ID] = r.Spec.Isolation
	n.obsMu.Unlock()
}

// fail reports that the node could not run id (generation gen) and
// forgets it: the last word on a start that left nothing behind, so the
// cluster shows why instead of a start that never ends. The caller holds
// id's lock.
func (n *Node) fail(id spec.ID, gen uint64, err error) {
	n.obsMu.Lock()
	delete(n.obs, id)
	n.obsMu.Unlock()
	if n.cfg.Report != nil {
		n.cfg.Report(id, workload.Observation{
			Node: n.cfg.Name, Generation: gen, State: workload.StateExited,
			Error: err.Error(), FinishedAt: time.Now().UTC(),
		})
	}
}

// current is the observation of r: the one in memory, or, for a record
// that has none (the node was not started), what the record says.
func (n *Node) current(r store.Record) workload.Observation {
	if o, ok := n.Observation(r.ID); ok {
		return o
	}
	return workload.Observation{Node: n.cfg.Name, Generation: r.Generation, State: r.State, ImageDigest: r.ImageDigest, ExitCode: r.ExitCode, Restarts: r.Restarts}
}

// Run starts the workload the cluster allocated here and returns what the
// node observes once it is ready, or once ReadyTimeout has passed. It is
// idempotent: when this node already has the id, it answers with the
// current observation instead of starting a second copy, so a retried
// call or a reconciler racing the spawn cannot double-start.
//
// The start runs to its end even if ctx is cancelled, so a client that
// hangs up never leaves a half-made workload behind. If it fails, every
// trace of the workload goes, a last observation (exited, with Error) is
// reported, and the error is returned: ErrUnsupported or ErrPortInUse from
// the admission check, image errors as the image store gives them.
func (n *Node) Run(ctx context.Context, a workload.Allocation) (workload.Observation, error) {
	unlock := n.locks.Lock(a.ID.String())
	defer unlock()
	if a.Node != "" && a.Node != n.cfg.Name {
		return workload.Observation{}, fmt.Errorf("node: workload %s is allocated to node %s, not to this node %s", a.ID, a.Node, n.cfg.Name)
	}
	switch r, err := n.Store.Get(a.ID); {
	case err == nil:
		return n.current(r), nil
	case !errors.Is(err, store.ErrNotFound):
		return workload.Observation{}, fmt.Errorf("node: read record of %s: %w", a.ID, err)
	}
	gen := max(a.Generation, 1)
	if err := n.admit(a.Spec); err != nil {
		n.fail(a.ID, gen, err)
		return workload.Observation{}, err
	}
	r := store.Record{
		ID: a.ID, Spec: a.Spec, Generation: gen, Desired: workload.DesiredRunning,
		State: workload.StateCreating, CreatedAt: a.CreatedAt,
	}
	if r.CreatedAt.IsZero() {
		r.CreatedAt = time.Now().UTC()
	}
	if err := n.Store.Create(r); err != nil {
		err = fmt.Errorf("node: record workload %s: %w", a.ID, err)
		n.fail(a.ID, gen, err)
		return workload.Observation{}, err
	}
	n.report(a.ID, workload.Observation{Generation: gen, State: workload.StateCreating})
	ctx = context.WithoutCancel(ctx)
	o, err := n.start(ctx, r)
	if err != nil {
		n.teardown(ctx, a.ID)
		if derr := n.Store.Delete(a.ID); derr != nil {
			n.log.Error("run: could not delete the record of a failed start", "id", a.ID, "err", derr)
		}
		n.fail(a.ID, gen, err)
		return workload.Observation{}, err
	}
	return n.waitReady(ctx, a.ID, a.Spec, o), nil
}

// admit checks what only this host can know: whether it has the driver
// (and the driver the options) the workload needs, and whether a raw TCP
// public port it asks for is held here by something other than a
// workload. Cores, memory and the ports of other workloads are the
// scheduler's business: it placed the workload knowing them.
func (n *Node) admit(s spec.Spec) error {
	drv, ok := n.Drivers[s.Isolation]
	if !ok {
		return fmt.Errorf("%w: node %s cannot run %q workloads (it offers %v); this is the node's own admission check, the scheduler could not know this",
			ErrUnsupported, n.cfg.Name, s.Isolation, n.Info().Isolations)
	}
	if s.Tty && !drv.Capabilities().Tty {
		return fmt.Errorf("%w: %q workloads cannot have a terminal (tty) on node %s; run it without one and use exec -t (the node's own admission check: the scheduler could not know this)",
			ErrUnsupported, s.Isolation, n.cfg.Name)
	}
	if n.Routes == nil {
		return nil
	}
	for _, p := range s.Ports {
		if p.Proto != spec.ProtoTCP {
			continue
		}
		if owner, taken := n.Routes.PortOwner(p.Public); taken {
			return fmt.Errorf("%w: port %d on node %s is held by %s; choose another public port (the node's own admission check: the scheduler could not know this)",
				ErrPortInUse, p.Public, n.cfg.Name, owner)
		}
	}
	return nil
}

// start pulls, networks, creates and starts r, records that it runs and
// reports it running. The caller holds r's lock and has reported it
// creating.
func (n *Node) start(ctx context.Context, r store.Record) (workload.Observation, error) {
	drv := n.Drivers[r.Spec.Isolation]
	if drv == nil {
		return workload.Observation{}, fmt.Errorf("%w: node %s cannot run %q workloads", ErrUnsupported, n.cfg.Name, r.Spec.Isolation)
	}
	t0 := time.Now()
	// The pin keeps the image from GC until the record below names its
	// digest; from then on the record keeps it. A pin rather than GC
	// sparing recently pulled images: any window is a guess that a slow
	// start (a large pull, mkfs of a microVM disk) can outlast, and it
	// would spare images nobody uses; the pin lasts exactly as long as
	// the start.
	img, release, err := n.Images.Acquire(ctx, r.Spec.Image, nil)
	if err != nil {
		return workload.Observation{}, err
	}
	defer release()
	if n.afterImage != nil {
		n.afterImage(img)
	}
	t1 := time.Now()
	var att network.Attachment
	if _, own := drv.(driver.OwnNetwork); !own {
		if att, err = n.Network.Attach(ctx, r.ID, r.Spec.Egress...); err != nil {
			return workload.Observation{}, fmt.Errorf("node: network for %s: %w", r.ID, err)
		}
	}
	t2 := time.Now()
	dc := n.driverConfig(r, img, att)
	if dc.SecretFiles, err = n.secretValues(ctx, r.Spec); err != nil {
		return workload.Observation{}, fmt.Errorf("node: secrets of %s: %w", r.ID, err)
	}
	dc.SecretEnv = secretEnv(r.Spec, dc.SecretFiles)
	if dc.Volumes, err = n.volumeMounts(ctx, r.ID, r.Spec); err != nil {
		return workload.Observation{}, err
	}
	if run, ok := drv.(driver.Runner); ok {
		// One step, and one runtime process, from bundle to running.
		if err := run.Run(ctx, dc); err != nil {
			return workload.Observation{}, fmt.Errorf("node: run %s: %w", r.ID, err)
		}
		t3 := time.Now()
		return n.started(ctx, drv, r, img, att, t0, t1, t2, t3, t3)
	}
	if err := drv.Create(ctx, dc); err != nil {
		return workload.Observation{}, fmt.Errorf("node: create %s: %w", r.ID, err)
	}
	t3 := time.Now()
	if err := drv.Start(ctx, r.ID); err != nil {
		return workload.Observation{}, fmt.Errorf("node: start %s: %w", r.ID, err)
	}
	t4 := time.Now()
	return n.started(ctx, drv, r, img, att, t0, t1, t2, t3, t4)
}

// started records that r runs and reports it running; start's end.
func (n *Node) started(ctx context.Context, drv driver.Driver, r store.Record, img *image.Image, att network.Attachment, t0, t1, t2, t3, t4 time.Time) (workload.Observation, error) {
	st, err := drv.Status(ctx, r.ID)
	if err != nil {
		return workload.Observation{}, fmt.Errorf("node: status of %s: %w", r.ID, err)
	}
	r, err = n.Store.Update(r.ID, func(r *store.Record) error {
		r.State, r.ImageDigest, r.ExitCode = workload.StateRunning, img.Digest, 0
		return nil
	})
	if err != nil {
		return workload.Observation{}, fmt.Errorf("node: record %s: %w", r.ID, err)
	}
	n.knowIsolation(r)
	ip, err := workloadIP(ctx, drv, r.ID, att)
	if err != nil {
		return workload.Observation{}, fmt.Errorf("node: address of %s: %w", r.ID, err)
	}
	o := workload.Observation{
		Generation: r.Generation, State: workload.StateRunning, IP: ip, Pid: st.Pid,
		ImageDigest: img.Digest, StartedAt: orNow(st.StartedAt),
		Restarts: r.Restarts, ExposedPort: exposedPort(img.Config, r.Spec),
	}
	o.Ready = readyPort(r.Spec, o) == 0
	o = n.report(r.ID, o)
	n.log.Info("workload started", "id", r.ID, "image", r.Spec.Image, "ip", o.IP, "pid", o.Pid,
		"image_ms", ms(t1.Sub(t0)), "network_ms", ms(t2.Sub(t1)), "create_ms", ms(t3.Sub(t2)), "start_ms", ms(t4.Sub(t3)))
	return o, nil
}

// workloadIP is where the node reaches a running workload: its attachment
// on the node bridge, or what a driver that networks its own workloads says.
func workloadIP(ctx context.Context, drv driver.Driver, id spec.ID, att network.Attachment) (string, error) {
	if own, ok := drv.(driver.OwnNetwork); ok {
		return own.WorkloadIP(ctx, id)
	}
	return att.IP.String(), nil
}

func (n *Node) driverConfig(r store.Record, img *image.Image, att network.Attachment) driver.Config {
	return driver.Config{
		ID: r.ID, Spec: r.Spec, Rootfs: img.Rootfs, ImageConfig: imageConfig(img.Config, r.Spec),
		Network:  driver.Network{NetNSPath: att.NetNSPath, IP: att.IP.String()},
		Hostname: r.ID.String()[:8],
	}
}

// waitReady waits until the workload's first port accepts a connection,
// so a caller that is answered can use its URL at once, and reports it
// ready. Past ReadyTimeout it answers anyway; the watcher reports it ready
// later. The caller holds id's lock.
func (n *Node) waitReady(ctx context.Context, id spec.ID, s spec.Spec, o workload.Observation) workload.Observation {
	if o.Ready {
		return o
	}
	deadline := time.Now().Add(n.cfg.ReadyTimeout)
	// Most servers listen within milliseconds of starting: the first
	// probes come soon, later ones back off so a slow starter costs
	// little.
	wait := firstReadyPoll
	for time.Now().Before(deadline) {
		if probe(readyPort(s, o), o.IP) {
			o.Ready = true
			return n.report(id, o)
		}
		select {
		case <-ctx.Done():
			return o
		case <-time.After(wait):
		}
		wait = min(2*wait, maxReadyPoll)
	}
	// The caller is told why its URL answers 503, and so is anyone who
	// looks at the workload later; the watcher clears it once ready.
	o.Error = n.notListening(ctx, id, s, o, n.cfg.ReadyTimeout)
	n.log.Warn("workload not ready yet; answering anyway", "id", id, "timeout", n.cfg.ReadyTimeout, "why", o.Error)
	return n.report(id, o)
}

// How Run polls a starting workload's readiness: from firstReadyPoll,
// doubling up to maxReadyPoll.
const (
	firstReadyPoll = time.Millisecond
	maxReadyPoll   = 100 * time.Millisecond
)

// probe says whether the workload at ip accepts connections on port; one
// with no port to serve (0) is ready as soon as it runs.
func probe(port uint16, ip string) bool {
	if port == 0 {
		return true
	}
	if ip == "" {
		return false
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(int(port)))
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// teardown removes every host resource of id. Each step tolerates a
// missing piece, so it is safe after any partial start.
func (n *Node) teardown(ctx context.Context, id spec.ID) {
	for _, d := range n.Drivers {
		if err := d.Delete(ctx, id); err != nil && !errors.Is(err, driver.ErrNotFound) {
			n.log.Warn("teardown: driver delete", "id", id, "err", err)
		}
	}
	if err := n.Network.Release(ctx, id); err != nil {
		n.log.Warn("teardown: network release", "id", id, "err", err)
	}
}

// List returns the node's record of every workload it hosts, oldest first.
func (n *Node) List() ([]store.Record, error) { return n.Store.List() }

// Stop ends id's process and frees its network, and reports it stopped.
// The record and logs stay until Remove. A timeout of 0 means the node's
// default.
func (n *Node) Stop(ctx context.Context, id spec.ID, timeout time.Duration) (workload.Observation, error) {
	if timeout <= 0 {
		timeout = n.cfg.StopTimeout
	}
	return n.stop(ctx, id, timeout)
}

// stop is Stop with an exact grace period; 0 kills at once.
func (n *Node) stop(ctx context.Context, id spec.ID, timeout time.Duration) (workload.Observation, error) {
	unlock := n.locks.Lock(id.String())
	defer unlock()
	r, err := n.Store.Get(id)
	if err != nil {
		return workload.Observation{}, err
	}
	ctx = context.WithoutCancel(ctx)
	// Desired state first: if we crash halfway, recovery finishes the stop.
	if _, err := n.Store.Update(id, func(r *store.Record) error { r.Desired = workload.DesiredStopped; return nil }); err != nil {
		return workload.Observation{}, err
	}
	var st driver.Status
	if drv := n.Drivers[r.Spec.Isolation]; drv != nil {
		if err := drv.Stop(ctx, id, timeout); err != nil && !errors.Is(err, driver.ErrNotFound) {
			return n.current(r), fmt.Errorf("node: stop %s: %w", id, err)
		}
		st, _ = drv.Status(ctx, id)
	}
	if err := n.Network.Release(ctx, id); err != nil {
		return n.current(r), fmt.Errorf("node: release network of %s: %w", id, err)
	}
	if _, err := n.Store.Update(id, func(r *store.Record) error { r.State = workload.StateStopped; return nil }); err != nil {
		return n.current(r), err
	}
	n.log.Info("workload stopped", "id", id)
	return n.report(id, stoppedAs(n.current(r), st)), nil
}

// stoppedAs is o once stopped: no process, address or readiness. A
// workload already stopped keeps its end time, so a second stop changes
// nothing.
func stoppedAs(o workload.Observation, st driver.Status) workload.Observation {
	if o.State != workload.StateStopped {
		o.FinishedAt = orNow(st.FinishedAt)
	}
	o.State, o.Pid, o.IP, o.Ready, o.Error = workload.StateStopped, 0, "", false, ""
	return o
}

// Remove kills id at once if it runs, as `docker rm -f` does, and deletes
// every trace of it, its observation included. Stop first for a graceful
// end.
func (n *Node) Remove(ctx context.Context, id spec.ID) error {
	r, err := n.Store.Get(id)
	if err != nil {
		return err
	}
	if r.Desired == workload.DesiredRunning || r.State != workload.StateStopped {
		if _, err := n.stop(ctx, id, 0); err != nil {
			return err
		}
	}
	unlock := n.locks.Lock(id.String())
	defer unlock()
	ctx = context.WithoutCancel(ctx)
	n.teardown(ctx, id)
	if err := n.Store.Delete(id); err != nil {
		return err
	}
	n.obsMu.Lock()
	delete(n.obs, id)
	delete(n.probes, id)
	delete(n.isolation, id)
	n.obsMu.Unlock()
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
// start holds it (image.Store.Acquire) before its record names it. So an
// image pulled by hand and not spawned yet goes too.
func (n *Node) PruneImages(ctx context.Context) (image.GCResult, error) {
	return n.pruneImages(ctx, 0)
}

// pruneImages is PruneImages that keeps images used less than grace ago.
func (n *Node) pruneImages(ctx context.Context, grace time.Duration) (image.GCResult, error) {
	if err := ctx.Err(); err != nil {
		return image.GCResult{}, err
	}
	res, err := n.Images.GCUnusedFor(grace, n.imagesInUse)
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
// which a restart of the workload resolves again. Every record is this
// node's (see Node), as recovery takes them all.
func (n *Node) imagesInUse() ([]string, error) {
	list, err := n.Store.List()
	if err != nil {
		return nil, fmt.Errorf("read workloads: %w", err)
	}
	var names []string
	for _, r := range list {
		names = append(names, r.Spec.Image)
		if r.ImageDigest != "" {
			names = append(names, r.ImageDigest)
		}
	}
	return names, nil
}

// collectImages collects images unused for ImageGCGrace every
// ImageGCInterval until Close.
func (n *Node) collectImages() {
	t := time.NewTimer(min(FirstImageGC, n.cfg.ImageGCInterval))
	defer t.Stop()
	for {
		select {
		case <-n.quit:
			return
		case <-t.C:
		}
		if _, err := n.pruneImages(context.Background(), n.cfg.ImageGCGrace); err != nil {
			n.log.Warn("image GC failed; it runs again next interval", "err", err, "interval", n.cfg.ImageGCInterval)
		}
		t.Reset(n.cfg.ImageGCInterval)
	}
}

func (n *Node) driverFor(id spec.ID) (driver.Driver, error) {
	r, err := n.Store.Get(id)
	if err != nil {
		return nil, err
	}
	drv := n.Drivers[r.Spec.Isolation]
	if drv == nil {
		return nil, fmt.Errorf("%w: %s on node %s", ErrUnsupported, r.Spec.Isolation, n.cfg.Name)
	}
	return drv, nil
}

// Logs streams id's output.
func (n *Node) Logs(ctx context.Context, id spec.ID, opts driver.LogOptions) (io.ReadCloser, error) {
	drv, err := n.driverFor(id)
	if err != nil {
		return nil, err
	}
	return drv.Logs(ctx, id, opts)
}

// Exec runs a process in id and returns its exit code.
func (n *Node) Exec(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error) {
	drv, err := n.driverFor(id)
	if err != nil {
		return -1, err
	}
	// A process run in the workload sees its secrets as its main process
	// does; the caller's own env comes after, so it may override them.
	if r, err := n.Store.Get(id); err == nil && len(r.Spec.Secrets) > 0 {
		values, err := n.secretValues(ctx, r.Spec)
		if err != nil {
			return -1, fmt.Errorf("node: secrets of %s: %w", id, err)
		}
		cfg.Env = append(secretEnv(r.Spec, values), cfg.Env...)
	}
	return drv.Exec(ctx, id, cfg)
}

// Attach connects to id's main process.
func (n *Node) Attach(ctx context.Context, id spec.ID, stdio driver.IO) error {
	drv, err := n.driverFor(id)
	if err != nil {
		return err
	}
	return drv.Attach(ctx, id, stdio)
}

// orNow is t, or the present when the driver did not say (zero).
func orNow(t time.Time) time.Time {
	if t.IsZero() {
		return time.Now().UTC()
	}
	return t.UTC()
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

// secretValues resolves the secrets s names through Config.Secrets.
func (n *Node) secretValues(ctx context.Context, s spec.Spec) (map[string][]byte, error) {
	if len(s.Secrets) == 0 {
		return nil, nil
	}
	if n.cfg.Secrets == nil {
		return nil, errors.New("this node has no way to read secrets")
	}
	return n.cfg.Secrets(ctx, s)
}

// secretEnv is s's secrets as KEY=VALUE entries, sorted by key.
func secretEnv(s spec.Spec, values map[string][]byte) []string {
	env := make([]string, 0, len(s.Secrets))
	for key, name := range s.Secrets {
		if v, ok := values[name]; ok {
			env = append(env, key+"="+string(v))
		}
	}
	slices.Sort(env)
	return env
}
