// Package cri runs workloads on a Kubernetes CRI (runtime v1) endpoint, such
// as containerd's or CRI-O's socket, instead of an OCI runtime of our own.
// Each workload is one pod sandbox holding one container. The endpoint pulls
// the image itself, from the workload's registry reference, and networks the
// pod with its own CNI set-up; the node asks it for the pod's address.
//
// The driver keeps no state of its own: every workload is found again by
// the label hypercore.dev/workload=<id> on its sandbox and container, so a
// restarted daemon (a new Driver) re-adopts what an old one started.
package cri

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/spec"
)

// Labels the driver puts on every sandbox and container it makes.
const (
	// LabelWorkload names the hypercore workload a sandbox belongs to.
	LabelWorkload = "hypercore.dev/workload"
	// LabelSpecHash is a hash of the workload's spec, so that an operator
	// (or a later version of the driver) can tell a sandbox made for an
	// older spec of the same workload.
	LabelSpecHash = "hypercore.dev/spec-hash"
	// podNamespace is the Kubernetes-style namespace of every sandbox.
	podNamespace = "hypercore"
	// containerName is the one container in each sandbox.
	containerName = "main"
)

// ErrUnsupported is returned for streaming calls (attach, streaming exec,
// logs) this driver does not make through the endpoint.
var ErrUnsupported = errors.New("not supported on this CRI endpoint")

// cpuPeriod is the CFS period the driver sets; the quota is Cores of it.
const cpuPeriod = 100_000

// Options configures a Driver.
type Options struct {
	// Endpoint is the CRI endpoint: unix:///path/to/socket, or
	// tcp://host:port for a remote endpoint with mutual TLS.
	Endpoint string
	// CA, Cert and Key are PEM files for a tcp:// endpoint: the CA that
	// signed the endpoint's certificate, and the node's client
	// certificate and key.
	CA, Cert, Key string
	// DialTimeout bounds the first call to the endpoint; 0 is 10s.
	DialTimeout time.Duration
	// LogDir, for a local endpoint, is where the endpoint writes the
	// containers' logs (one directory per workload), so that Logs can
	// read them; "" leaves logs to the endpoint and Logs unsupported.
	LogDir string
}

// Driver is a driver.Driver on one CRI endpoint.
type Driver struct {
	endpoint string
	logDir   string
	pids     pidCache
	conn     *grpc.ClientConn
	rt       runtimeapi.RuntimeServiceClient
	img      runtimeapi.ImageServiceClient
}

var (
	_ driver.Driver     = (*Driver)(nil)
	_ driver.OwnNetwork = (*Driver)(nil)
)

// New connects to the endpoint and checks, with a Version call, that it
// answers CRI runtime v1.
func New(ctx context.Context, o Options) (*Driver, error) {
	target, creds, err := dialTarget(o)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20)))
	if err != nil {
		return nil, fmt.Errorf("cri: endpoint %s: %w", o.Endpoint, err)
	}
	if o.LogDir != "" && !strings.HasPrefix(o.Endpoint, "unix://") {
		return nil, fmt.Errorf("cri: endpoint %s is remote: its containers' logs cannot be kept in %s on this machine", o.Endpoint, o.LogDir)
	}
	d := &Driver{endpoint: o.Endpoint, logDir: o.LogDir, conn: conn, rt: runtimeapi.NewRuntimeServiceClient(conn), img: runtimeapi.NewImageServiceClient(conn)}
	timeout := o.DialTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	vctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, err := d.rt.Version(vctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
	if err != nil {
		conn.Close()
		hint := "is containerd running with its CRI plugin, and is --cri-endpoint right?"
		if strings.HasPrefix(o.Endpoint, "tcp://") {
			hint = "is the endpoint listening with TLS (containerd: [grpc] tcp_address and the CRI plugin's disable_tcp_service = false), does its tcp_tls_ca trust --cri-cert, and did --cri-ca sign its certificate?"
		}
		return nil, fmt.Errorf("cri: endpoint %s does not answer CRI runtime v1 (%s): %w", o.Endpoint, hint, err)
	}
	if v.RuntimeApiVersion != "v1" {
		conn.Close()
		return nil, fmt.Errorf("cri: endpoint %s speaks CRI %q, want v1", o.Endpoint, v.RuntimeApiVersion)
	}
	return d, nil
}

// dialTarget is the gRPC target and transport security for o's endpoint:
// a unix socket as it is, a tcp:// endpoint with TLS 1.3 only, the
// endpoint's certificate checked against o.CA for the endpoint's host
// name, and the node's client certificate.
func dialTarget(o Options) (string, credentials.TransportCredentials, error) {
	switch {
	case strings.HasPrefix(o.Endpoint, "unix:///"):
		if o.CA != "" || o.Cert != "" || o.Key != "" {
			return "", nil, fmt.Errorf("cri: endpoint %s is a local socket: --cri-ca, --cri-cert and --cri-key are for tcp:// endpoints only", o.Endpoint)
		}
		return o.Endpoint, insecure.NewCredentials(), nil
	case strings.HasPrefix(o.Endpoint, "tcp://"):
		hostport := strings.TrimPrefix(o.Endpoint, "tcp://")
		host, _, err := net.SplitHostPort(hostport)
		if err != nil || host == "" {
			return "", nil, fmt.Errorf("cri: endpoint %q: want tcp://HOST:PORT", o.Endpoint)
		}
		if o.CA == "" || o.Cert == "" || o.Key == "" {
			return "", nil, fmt.Errorf("cri: endpoint %s is remote: it needs --cri-ca (the CA of the endpoint's certificate), --cri-cert and --cri-key (the node's client certificate)", o.Endpoint)
		}
		pem, err := os.ReadFile(o.CA)
		if err != nil {
			return "", nil, fmt.Errorf("cri: --cri-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return "", nil, fmt.Errorf("cri: --cri-ca %s holds no PEM certificate", o.CA)
		}
		cert, err := tls.LoadX509KeyPair(o.Cert, o.Key)
		if err != nil {
			return "", nil, fmt.Errorf("cri: --cri-cert/--cri-key: %w", err)
		}
		return "passthrough:///" + hostport, credentials.NewTLS(&tls.Config{
			MinVersion:   tls.VersionTLS13,
			RootCAs:      pool,
			Certificates: []tls.Certificate{cert},
			ServerName:   host,
		}), nil
	default:
		return "", nil, fmt.Errorf("cri: endpoint %q: want unix:///path/to/socket or tcp://HOST:PORT", o.Endpoint)
	}
}

// Close drops the connection to the endpoint.
func (d *Driver) Close() error { return d.conn.Close() }

// Endpoint is the endpoint this driver talks to.
func (d *Driver) Endpoint() string { return d.endpoint }

// Capabilities reports container isolation with one-shot exec only.
func (d *Driver) Capabilities() driver.Capabilities {
	return driver.Capabilities{Isolation: spec.IsolationContainer, Exec: true}
}

// wrap names the endpoint in an error from it.
func (d *Driver) wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("cri: %s on %s: %w", what, d.endpoint, err)
}

// SpecHash is the hash of s recorded in LabelSpecHash.
func SpecHash(s spec.Spec) string {
	b, _ := json.Marshal(s)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// Create pulls the image if the endpoint lacks it, and makes a running pod
// sandbox and a created container in it. Leftovers of the same id go first.
func (d *Driver) Create(ctx context.Context, cfg driver.Config) error {
	if err := d.Delete(ctx, cfg.ID); err != nil && !errors.Is(err, driver.ErrNotFound) {
		return err
	}
	ref := cfg.Spec.Image
	if err := d.ensureImage(ctx, ref); err != nil {
		return err
	}
	labels := map[string]string{LabelWorkload: cfg.ID.String(), LabelSpecHash: SpecHash(cfg.Spec)}
	logDir := ""
	if d.logDir != "" {
		logDir = filepath.Dir(d.logFile(cfg.ID))
		if err := os.MkdirAll(logDir, 0o700); err != nil {
			return fmt.Errorf("cri: log directory of %s: %w", cfg.ID, err)
		}
	}
	sbCfg := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: cfg.ID.String(), Uid: cfg.ID.String(), Namespace: podNamespace},
		Hostname:     cfg.Hostname,
		Labels:       labels,
		LogDirectory: logDir,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_POD, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}
	sb, err := d.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sbCfg})
	if err != nil {
		return d.wrap("run pod sandbox for "+cfg.ID.String(), err)
	}
	ic := cfg.ImageConfig
	args := ic.Cmd
	if len(cfg.Spec.Args) > 0 {
		args = cfg.Spec.Args
	}
	env := driver.MergeEnv(ic.Env, cfg.Spec.Env, cfg.SecretEnv)
	ctrCfg := &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: containerName},
		Image:      &runtimeapi.ImageSpec{Image: ref},
		Command:    ic.Entrypoint,
		Args:       args,
		WorkingDir: ic.WorkingDir,
		Envs:       keyValues(env),
		Labels:     labels,
		LogPath:    containerName + ".log",
		Tty:        cfg.Spec.Tty,
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{
				CpuPeriod:          cpuPeriod,
				CpuQuota:           int64(cfg.Spec.Cores * cpuPeriod),
				MemoryLimitInBytes: cfg.Spec.MemoryMiB << 20,
			},
		},
	}
	if ctrCfg.Linux.SecurityContext, err = securityContext(ic.User); err != nil {
		d.removeSandbox(context.WithoutCancel(ctx), sb.PodSandboxId)
		return fmt.Errorf("cri: %s on %s: %w", cfg.ID, d.endpoint, err)
	}
	for _, v := range cfg.Volumes {
		if v.HostDir != "" {
			ctrCfg.Mounts = append(ctrCfg.Mounts, &runtimeapi.Mount{ContainerPath: v.Target, HostPath: v.HostDir})
		}
	}
	if _, err := d.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, Config: ctrCfg, SandboxConfig: sbCfg}); err != nil {
		// No half-made workload: the sandbox goes with the failed container.
		d.removeSandbox(context.WithoutCancel(ctx), sb.PodSandboxId)
		return d.wrap("create container for "+cfg.ID.String(), err)
	}
	return nil
}

// securityContext runs the container as user (name, uid, uid:gid or
// name:gid, from the spec or the image); "" leaves it to the endpoint,
// which reads the image's. CRI names groups by number only.
func securityContext(user string) (*runtimeapi.LinuxContainerSecurityContext, error) {
	sc := &runtimeapi.LinuxContainerSecurityContext{}
	if user == "" {
		return sc, nil
	}
	u, g, hasGroup := strings.Cut(user, ":")
	if uid, err := strconv.ParseInt(u, 10, 64); err == nil {
		sc.RunAsUser = &runtimeapi.Int64Value{Value: uid}
	} else {
		sc.RunAsUsername = u
	}
	if hasGroup {
		gid, err := strconv.ParseInt(g, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("user %q: a group by name is %w; give the gid", user, ErrUnsupported)
		}
		sc.RunAsGroup = &runtimeapi.Int64Value{Value: gid}
	}
	return sc, nil
}

// keyValues turns KEY=VALUE pairs into CRI key-values.
func keyValues(env []string) []*runtimeapi.KeyValue {
	out := make([]*runtimeapi.KeyValue, 0, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		out = append(out, &runtimeapi.KeyValue{Key: k, Value: []byte(v)})
	}
	return out
}

// ensureImage pulls ref on the endpoint unless it already holds it.
func (d *Driver) ensureImage(ctx context.Context, ref string) error {
	st, err := d.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: ref}})
	if err != nil {
		return d.wrap("image status of "+ref, err)
	}
	if st.Image != nil {
		return nil
	}
	if _, err := d.img.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: ref}}); err != nil {
		return d.wrap("pull "+ref+" (the endpoint pulls images itself: it must reach the registry)", err)
	}
	return nil
}

// selector filters by the workload label.
func selector(id spec.ID) map[string]string { return map[string]string{LabelWorkload: id.String()} }

// sandboxes lists every sandbox labelled with id, ready or not.
func (d *Driver) sandboxes(ctx context.Context, id spec.ID) ([]*runtimeapi.PodSandbox, error) {
	resp, err := d.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: selector(id)}})
	if err != nil {
		return nil, d.wrap("list pod sandboxes", err)
	}
	return resp.Items, nil
}

// container finds id's container in its newest ready sandbox.
func (d *Driver) container(ctx context.Context, id spec.ID) (*runtimeapi.Container, error) {
	resp, err := d.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{LabelSelector: selector(id)}})
	if err != nil {
		return nil, d.wrap("list containers", err)
	}
	var best *runtimeapi.Container
	for _, c := range resp.Containers {
		if best == nil || c.CreatedAt > best.CreatedAt {
			best = c
		}
	}
	if best == nil {
		return nil, driver.ErrNotFound
	}
	return best, nil
}

// Start starts id's created container.
func (d *Driver) Start(ctx context.Context, id spec.ID) error {
	c, err := d.container(ctx, id)
	if err != nil {
		return err
	}
	_, err = d.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: c.Id})
	return d.wrap("start container of "+id.String(), err)
}

// Stop stops id's container, killing it after timeout. The sandbox stays,
// so Status still reports the exit, until Delete.
func (d *Driver) Stop(ctx context.Context, id spec.ID, timeout time.Duration) error {
	c, err := d.container(ctx, id)
	if err != nil {
		return err
	}
	// CRI counts in whole seconds and 0 means "kill now".
	secs := int64((timeout + time.Second - 1) / time.Second)
	_, err = d.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.Id, Timeout: secs})
	if status.Code(err) == codes.NotFound {
		return nil
	}
	return d.wrap("stop container of "+id.String(), err)
}

// Delete stops and removes every sandbox labelled id, containers with them.
func (d *Driver) Delete(ctx context.Context, id spec.ID) error {
	sbs, err := d.sandboxes(ctx, id)
	if err != nil {
		return err
	}
	var errs []error
	for _, sb := range sbs {
		errs = append(errs, d.removeSandbox(ctx, sb.Id))
	}
	if d.logDir != "" {
		// Every trace, logs included; a later Create of the id starts anew.
		errs = append(errs, os.RemoveAll(filepath.Dir(d.logFile(id))))
	}
	return errors.Join(errs...)
}

// removeSandbox stops and removes one sandbox; a missing one is no error.
func (d *Driver) removeSandbox(ctx context.Context, sbID string) error {
	if _, err := d.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sbID}); err != nil && status.Code(err) != codes.NotFound {
		return d.wrap("stop pod sandbox "+sbID, err)
	}
	if _, err := d.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sbID}); err != nil && status.Code(err) != codes.NotFound {
		return d.wrap("remove pod sandbox "+sbID, err)
	}
	return nil
}

// pidCache remembers the pid of each running container by container id,
// so that Status needs the verbose call once per container.
type pidCache struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *pidCache) get(id string) (int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pid, ok := c.m[id]
	return pid, ok
}

func (c *pidCache) set(id string, pid int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[id] = pid
}

func (c *pidCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, id)
}

// infoPid is the process id containerd and CRI-O put in a verbose
// status's "info" JSON; 0 from an endpoint that does not, or when the
// container does not run.
func infoPid(info map[string]string) int {
	var v struct {
		Pid int `json:"pid"`
	}
	if json.Unmarshal([]byte(info["info"]), &v) != nil {
		return 0
	}
	return v.Pid
}

// Status reports id's container state. CRI has no field for the process
// id; it comes from the verbose info where the endpoint gives it.
func (d *Driver) Status(ctx context.Context, id spec.ID) (driver.Status, error) {
	c, err := d.container(ctx, id)
	if err != nil {
		return driver.Status{}, err
	}
	// The verbose status carries the whole OCI spec: it is asked for once
	// per running container, for its pid, and not on every poll.
	pid, known := d.pids.get(c.Id)
	resp, err := d.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.Id, Verbose: !known})
	if status.Code(err) == codes.NotFound {
		return driver.Status{}, driver.ErrNotFound
	}
	if err != nil {
		return driver.Status{}, d.wrap("container status of "+id.String(), err)
	}
	s := resp.Status
	if !known {
		pid = infoPid(resp.Info)
	}
	if s.State == runtimeapi.ContainerState_CONTAINER_RUNNING && pid > 0 {
		d.pids.set(c.Id, pid)
	} else {
		d.pids.forget(c.Id)
		if s.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			pid = 0
		}
	}
	st := driver.Status{ExitCode: int(s.ExitCode), Pid: pid}
	switch s.State {
	case runtimeapi.ContainerState_CONTAINER_CREATED:
		st.State = driver.StateCreated
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		st.State = driver.StateRunning
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		st.State = driver.StateStopped
	default:
		st.State = driver.StateUnknown
	}
	if s.StartedAt > 0 {
		st.StartedAt = time.Unix(0, s.StartedAt)
	}
	if s.FinishedAt > 0 {
		st.FinishedAt = time.Unix(0, s.FinishedAt)
	}
	return st, nil
}

// Recover finds id's sandbox again by its label; the endpoint kept it
// running while the daemon was away, so nothing needs redoing.
func (d *Driver) Recover(ctx context.Context, cfg driver.Config) (driver.Status, error) {
	return d.Status(ctx, cfg.ID)
}

// WorkloadIP is the pod's address as the endpoint's CNI gave it.
func (d *Driver) WorkloadIP(ctx context.Context, id spec.ID) (string, error) {
	sbs, err := d.sandboxes(ctx, id)
	if err != nil {
		return "", err
	}
	for _, sb := range sbs {
		if sb.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		resp, err := d.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sb.Id})
		if err != nil {
			return "", d.wrap("pod sandbox status of "+id.String(), err)
		}
		if n := resp.Status.GetNetwork(); n != nil && n.Ip != "" {
			return n.Ip, nil
		}
		return "", fmt.Errorf("cri: pod sandbox of %s on %s has no IP: the endpoint's CNI configuration gave it none", id, d.endpoint)
	}
	return "", driver.ErrNotFound
}

// Attach is not offered: it needs the endpoint's streaming server.
func (d *Driver) Attach(ctx context.Context, id spec.ID, stdio driver.IO) error {
	return fmt.Errorf("cri: attach to %s on %s: %w", id, d.endpoint, ErrUnsupported)
}

// maxExecTime bounds one ExecSync, whose output the endpoint buffers.
const maxExecTime = 10 * time.Minute

// Exec runs a process to completion through ExecSync and copies its output
// once it ended. The process gets no stdin (it reads end-of-file: callers
// always offer one, so it is not refused); a tty, env, workdir and user
// need streaming exec and are refused.
func (d *Driver) Exec(ctx context.Context, id spec.ID, cfg driver.ExecConfig) (int, error) {
	if cfg.Tty || len(cfg.Env) > 0 || cfg.WorkDir != "" || cfg.User != "" {
		return -1, fmt.Errorf("cri: exec in %s on %s with a tty, env, workdir or user: %w (only one-shot exec of a command, without input)", id, d.endpoint, ErrUnsupported)
	}
	c, err := d.container(ctx, id)
	if err != nil {
		return -1, err
	}
	resp, err := d.rt.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: c.Id, Cmd: cfg.Args, Timeout: int64(maxExecTime / time.Second)})
	if err != nil {
		return -1, d.wrap("exec in "+id.String(), err)
	}
	if cfg.Stdout != nil {
		cfg.Stdout.Write(resp.Stdout)
	}
	if cfg.Stderr != nil {
		cfg.Stderr.Write(resp.Stderr)
	}
	return int(resp.ExitCode), nil
}

// Stats reports the container's cpu time and working set.
func (d *Driver) Stats(ctx context.Context, id spec.ID) (driver.Stats, error) {
	c, err := d.container(ctx, id)
	if err != nil {
		return driver.Stats{}, err
	}
	resp, err := d.rt.ContainerStats(ctx, &runtimeapi.ContainerStatsRequest{ContainerId: c.Id})
	if err != nil {
		return driver.Stats{}, d.wrap("stats of "+id.String(), err)
	}
	var s driver.Stats
	if cpu := resp.Stats.GetCpu(); cpu != nil && cpu.UsageCoreNanoSeconds != nil {
		s.CPUNanos = cpu.UsageCoreNanoSeconds.Value
	}
	if mem := resp.Stats.GetMemory(); mem != nil && mem.WorkingSetBytes != nil {
		s.MemoryBytes = mem.WorkingSetBytes.Value
	}
	return s, nil
}
