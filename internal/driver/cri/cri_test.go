package cri_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/hypercore-dev/hypercore/internal/driver"
	"github.com/hypercore-dev/hypercore/internal/driver/cri"
	"github.com/hypercore-dev/hypercore/internal/driver/drivertest"
	"github.com/hypercore-dev/hypercore/internal/spec"
	"github.com/hypercore-dev/hypercore/internal/testutil"
)

const imageRef = "hypercore.test/httpd:1"

func config(t *testing.T) driver.Config {
	t.Helper()
	s, err := spec.Build(spec.Input{Image: imageRef, Cores: 0.5, MemoryMiB: 64, Env: []string{"COLOR=blue"}, User: "1000"})
	if err != nil {
		t.Fatal(err)
	}
	img := testutil.HTTPDImage(t)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	id := spec.NewID()
	ic := cf.Config
	ic.User = s.User // as the node merges the spec into the image's config
	return driver.Config{ID: id, Spec: s, ImageConfig: ic, Hostname: id.String()[:8]}
}

// TestLifecycle runs a workload on a real containerd through CRI: create,
// start, exec, the sandbox's labels and address, stop, recover with a new
// driver, delete.
func TestLifecycle(t *testing.T) {
	ctd := testutil.StartContainerd(t, cri.CNIConfList)
	ctd.Import(t, imageRef, testutil.HTTPDImage(t))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logDir := t.TempDir()
	d, err := cri.New(ctx, cri.Options{Endpoint: ctd.Endpoint(), LogDir: logDir})
	if err != nil {
		t.Fatal(err)
	}
	// A cleanup, not a defer: drivertest's cleanup still uses d.
	t.Cleanup(func() { d.Close() })
	cfg := config(t)
	drivertest.Run(t, ctx, d, cfg)
	first, err := d.Status(ctx, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := d.Status(ctx, cfg.ID); err != nil || again.Pid != first.Pid || again.State != driver.StateRunning {
		t.Errorf("second status: %+v, %v; want running with pid %d as the first", again, err, first.Pid)
	}

	out, code := drivertest.Exec(t, ctx, d, cfg.ID, "sh", "-c", "echo $COLOR $GREETING; cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us")
	if code != 0 {
		t.Fatalf("exec exit %d: %s", code, out)
	}
	if want := fmt.Sprintf("blue hello\n%d\n50000\n", 64<<20); out != want {
		t.Errorf("exec output %q, want %q (env from spec and image, memory limit, cpu quota)", out, want)
	}
	if out, _ := drivertest.Exec(t, ctx, d, cfg.ID, "id", "-u"); out != "1000\n" {
		t.Errorf("id -u: %q, want the spec's user 1000", out)
	}
	if code := must(d.Exec(ctx, cfg.ID, driver.ExecConfig{Args: []string{"false"}})); code != 1 {
		t.Errorf("exec false: exit %d, want 1", code)
	}

	// The sandbox carries the workload's labels, as crictl shows them.
	conn := runtimeClient(t, ctd)
	pods, err := conn.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{cri.LabelWorkload: cfg.ID.String()}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 || pods.Items[0].Labels[cri.LabelSpecHash] != cri.SpecHash(cfg.Spec) {
		t.Fatalf("sandboxes labelled with the workload: %+v, want one with the spec hash", pods.Items)
	}

	// The pod's address is on the endpoint's CNI bridge, and httpd serves there.
	ip, err := d.WorkloadIP(ctx, cfg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ip, "10.213.") {
		t.Errorf("pod IP %s, want one from the shipped conflist's 10.213.0.0/16", ip)
	}
	fetch(t, ctd, ip)

	// httpd -v logs the request to stderr; the endpoint wrote it to the
	// log file the driver reads back.
	var logs string
	testutil.WaitFor(t, 10*time.Second, "the request in the logs", func() bool {
		logs = readLogs(t, ctx, d, cfg, driver.LogOptions{})
		return strings.Contains(logs, "response:200")
	})
	if strings.Contains(logs, "stderr") {
		t.Errorf("logs %q still carry the CRI log format's stream names", logs)
	}
	if tail := readLogs(t, ctx, d, cfg, driver.LogOptions{Tail: 1}); !strings.HasSuffix(logs, tail) || strings.Count(tail, "\n") != 1 {
		t.Errorf("logs with tail 1: %q, want the last line of %q", tail, logs)
	}

	// A followed log shows a new request as it is logged, and ends when
	// the workload is deleted.
	follow, err := d.Logs(ctx, cfg.ID, driver.LogOptions{Follow: true, Tail: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Close()
	var followed testutil.LockedBuffer
	followDone := make(chan struct{})
	go func() { io.Copy(&followed, follow); close(followDone) }()
	fetch(t, ctd, ip)
	testutil.WaitFor(t, 10*time.Second, "the second request in the followed logs", func() bool {
		return strings.Count(followed.String(), "response:200") == 2
	})

	// A new driver object (a restarted daemon) finds the same workload.
	d2, err := cri.New(ctx, cri.Options{Endpoint: ctd.Endpoint(), LogDir: logDir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	st, err := d2.Recover(ctx, cfg)
	if err != nil || st.State != driver.StateRunning || st.Pid <= 0 {
		t.Fatalf("recover: %+v, %v; want running with a pid", st, err)
	}
	if _, err := d2.Stats(ctx, cfg.ID); err != nil {
		t.Errorf("stats: %v", err)
	}

	if err := d2.Stop(ctx, cfg.ID, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if st, err := d2.Status(ctx, cfg.ID); err != nil || st.State != driver.StateStopped {
		t.Errorf("after stop: %+v, %v; want stopped", st, err)
	}
	if err := d2.Delete(ctx, cfg.ID); err != nil {
		t.Fatal(err)
	}
	pods, err = conn.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{cri.LabelWorkload: cfg.ID.String()}}})
	if err != nil || len(pods.Items) != 0 {
		t.Errorf("after delete: sandboxes %+v, %v; want none", pods.GetItems(), err)
	}
	if _, err := d2.Status(ctx, cfg.ID); err != driver.ErrNotFound {
		t.Errorf("status after delete: %v, want ErrNotFound", err)
	}
	select {
	case <-followDone:
	case <-time.After(10 * time.Second):
		t.Error("the followed log did not end when the workload was deleted")
	}
	if entries, _ := os.ReadDir(logDir); len(entries) != 0 {
		t.Errorf("after delete the log dir holds %d entries, want none", len(entries))
	}
	// Delete again is no error.
	if err := d2.Delete(ctx, cfg.ID); err != nil {
		t.Errorf("second delete: %v", err)
	}

	// A create that fails after its sandbox was made leaves no sandbox:
	// CRI names groups only by number.
	bad := config(t)
	bad.ImageConfig.User = "1000:staff"
	if err := d2.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), ctd.Endpoint()) {
		t.Errorf("create as a group by name: %v, want an error naming the endpoint", err)
	}
	pods, err = conn.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{cri.LabelWorkload: bad.ID.String()}}})
	if err != nil || len(pods.Items) != 0 {
		t.Errorf("after a failed create: sandboxes %+v, %v; want none", pods.GetItems(), err)
	}
}

// TestRefusesBadAndDeadEndpoints checks the errors a wrong --cri-endpoint gives.
func TestRefusesBadAndDeadEndpoints(t *testing.T) {
	ctx := context.Background()
	if _, err := cri.New(ctx, cri.Options{Endpoint: "http://127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "unix://") {
		t.Errorf("http endpoint: %v, want a refusal naming unix://", err)
	}
	sock := t.TempDir() + "/none.sock"
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	_, err = cri.New(ctx, cri.Options{Endpoint: "unix://" + sock, DialTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), sock) {
		t.Errorf("dead endpoint: %v, want an error naming it", err)
	}
}

// fetch gets / from the pod's httpd, from inside containerd's namespace.
func fetch(t *testing.T, ctd *testutil.Containerd, ip string) {
	t.Helper()
	if out, err := exec.Command("nsenter", "--net=/run/netns/"+ctd.NetNS, "busybox", "wget", "-qO-", fmt.Sprintf("http://%s:%d/", ip, testutil.HTTPPort)).CombinedOutput(); err != nil || string(out) != testutil.IndexHTML {
		t.Errorf("fetch from the pod: %q, %v; want %q", out, err, testutil.IndexHTML)
	}
}

func readLogs(t *testing.T, ctx context.Context, d driver.Driver, cfg driver.Config, opts driver.LogOptions) string {
	t.Helper()
	rc, err := d.Logs(ctx, cfg.ID, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func must(code int, err error) int {
	if err != nil {
		panic(err)
	}
	return code
}
