package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil"
	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// slurmConf is a one-machine Slurm with two nodes, hc1 and hc2, both at
// 127.0.0.1 on their own slurmd ports, as the trials ran it.
const slurmConf = `ClusterName=hctest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=16817
SlurmUser=root
StateSaveLocation=%[1]s/ctld
SlurmdSpoolDir=%[1]s/spool-%%n
SlurmctldPidFile=%[1]s/ctld.pid
SlurmdPidFile=%[1]s/slurmd-%%n.pid
SlurmctldLogFile=%[1]s/ctld.log
SlurmdLogFile=%[1]s/slurmd-%%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AuthType=auth/munge
MpiDefault=none
ReturnToService=2
KillWait=30
JobAcctGatherType=jobacct_gather/none
NodeName=hc1 NodeAddr=127.0.0.1 Port=16818 CPUs=1 RealMemory=1024
NodeName=hc2 NodeAddr=127.0.0.1 Port=16819 CPUs=1 RealMemory=1024
PartitionName=debug Nodes=hc1,hc2 Default=YES MaxTime=INFINITE State=UP
`

// startSlurm starts munged (unless it runs), slurmctld and two slurmd with
// the configuration in dir, all stopped when the test ends, and returns
// the configuration's path.
func startSlurm(t *testing.T, dir string) string {
	t.Helper()
	for _, tool := range []string{"munged", "slurmctld", "slurmd", "sbatch"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found; run scripts/deps.sh (packages munge, slurmctld, slurmd, slurm-client)", tool)
		}
	}
	conf := filepath.Join(dir, "slurm.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(slurmConf, dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "ctld"), 0o755)
	if exec.Command("pgrep", "-x", "munged").Run() != nil {
		os.MkdirAll("/run/munge", 0o755)
		exec.Command("chown", "munge:munge", "/run/munge").Run()
		if out, err := exec.Command("su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged").CombinedOutput(); err != nil {
			t.Fatalf("start munged: %v: %s", err, out)
		}
		t.Cleanup(func() {
			// munged forks into the background; its pid file names it.
			if b, err := os.ReadFile("/run/munge/munged.pid"); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					syscall.Kill(pid, syscall.SIGTERM)
				}
			}
		})
	}
	daemon := func(args ...string) {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Env = append(os.Environ(), "SLURM_CONF="+conf)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	}
	daemon("slurmctld", "-D", "-i", "-f", conf)
	time.Sleep(time.Second)
	daemon("slurmd", "-D", "-f", conf, "-N", "hc1")
	daemon("slurmd", "-D", "-f", conf, "-N", "hc2")
	t.Setenv("SLURM_CONF", conf) // for sinfo and scancel
	harness.WaitFor(t, "two idle Slurm nodes", 30*time.Second, func() bool {
		out, _ := exec.Command("sinfo", "-h", "-o", "%T %D").Output()
		return strings.TrimSpace(string(out)) == "idle 2"
	})
	return conf
}

// openTun makes /dev/net/tun usable by users, as Debian has it, for
// slirp4netns, and restores its mode when the test ends.
func openTun(t *testing.T) {
	t.Helper()
	st, err := os.Stat("/dev/net/tun")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod("/dev/net/tun", 0o666); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod("/dev/net/tun", st.Mode().Perm()) })
}

// TestSlurmJob is the issue's contract: as a user, `sbatch --nodes=2
// scripts/hypercore.slurm` makes a 2-node cluster whose API address and
// token are in ~/.hypercore/job-<id>/; workloads placed on both nodes
// answer through both proxies; after `scancel` no process of the user and
// none of the job's directories are left.
func TestSlurmJob(t *testing.T) {
	uid, gid := testUser(t)
	u, _ := user.Lookup(rootlessUser)
	dir, bin := userDir(t, uid, gid)
	conf := startSlurm(t, dir)
	openTun(t)
	script := filepath.Join(dir, "hypercore.slurm")
	data, err := os.ReadFile("../../scripts/hypercore.slurm")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(script, data, 0o755)

	// The registry is on the host's loopback, which slirp4netns shows the
	// nodes at 10.0.2.2.
	reg := testutil.Registry(t)
	testutil.Push(t, reg+"/web:1", testutil.HTTPDImage(t))
	_, regPort, _ := net.SplitHostPort(reg)
	ref := "10.0.2.2:" + regPort + "/web:1"

	sbatch := exec.Command("sbatch", "--parsable", "--nodes=2", "--mem=1024", "--chdir", dir, "--output", filepath.Join(dir, "slurm-%j.out"), script)
	sbatch.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	sbatch.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=" + u.HomeDir, "USER=" + rootlessUser,
		"SLURM_CONF=" + conf, "HYPERCORE=" + bin}
	out, err := sbatch.CombinedOutput()
	if err != nil {
		t.Fatalf("sbatch: %v: %s", err, out)
	}
	job := strings.TrimSpace(string(out))
	jobDir := filepath.Join(u.HomeDir, ".hypercore", "job-"+job)
	scancelled := false
	t.Cleanup(func() {
		if !scancelled {
			exec.Command("scancel", job).Run()
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "slurm-"+job+".out"))
			t.Logf("job output:\n%s", b)
		}
	})

	harness.WaitFor(t, "the job's API address in "+jobDir, 120*time.Second, func() bool {
		b, err := os.ReadFile(filepath.Join(jobDir, "api-addr"))
		return err == nil && len(b) > 0
	})
	for _, f := range []string{"api-addr", "api-token", "join-token", "ca.crt"} {
		if st, err := os.Stat(filepath.Join(jobDir, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, st)
		}
	}
	addrB, _ := os.ReadFile(filepath.Join(jobDir, "api-addr"))
	tokB, _ := os.ReadFile(filepath.Join(jobDir, "api-token"))
	api, token := strings.TrimSpace(string(addrB)), strings.TrimSpace(string(tokB))
	host, _, _ := net.SplitHostPort(api)
	// The API is TLS only off loopback, with a certificate of the
	// cluster's CA that names the address the job printed.
	caPEM, err := os.ReadFile(filepath.Join(jobDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s/ca.crt holds no certificate", jobDir)
	}
	apiClient := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	call := func(method, path, body string) (int, string) {
		req, _ := http.NewRequest(method, "https://"+api+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := apiClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	harness.WaitFor(t, "a 2-node cluster sized to the allocation", 60*time.Second, func() bool {
		var list struct {
			Nodes []struct {
				State     string `json:"state"`
				MemoryMiB int64  `json:"memory_mib"`
			}
		}
		code, body := call("GET", "/v1/nodes", "")
		if code != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list.Nodes) != 2 {
			return false
		}
		for _, n := range list.Nodes {
			if n.State != "alive" || n.MemoryMiB != 1024 {
				return false
			}
		}
		return true
	})

	// 900 of each node's 1024 MiB: the two cannot share a node.
	nodes := map[string]string{}
	for range 2 {
		code, body := call("POST", "/spawn", `{"image_ref":"`+ref+`","ports":{"80":8080},"memory":900}`)
		var a spawnAnswer
		if code != 200 || json.Unmarshal([]byte(body), &a) != nil {
			t.Fatalf("spawn: %d %s", code, body)
		}
		nodes[a.ID] = a.Node
	}
	if len(nodes) != 2 {
		t.Fatalf("spawned %v", nodes)
	}
	seen := map[string]bool{}
	for id, node := range nodes {
		seen[node] = true
		for _, proxyPort := range []int{17002, 17012} {
			harness.WaitFor(t, fmt.Sprintf("%s (on %s) through the proxy on port %d", id, node, proxyPort), 30*time.Second, func() bool {
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s:%d/", host, proxyPort), nil)
				req.Host = id + ".localhost"
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode == 200 && string(b) == testutil.IndexHTML
			})
		}
	}
	if len(seen) != 2 {
		t.Errorf("workloads landed on %v, want both nodes", seen)
	}

	if out, err := exec.Command("scancel", job).CombinedOutput(); err != nil {
		t.Fatalf("scancel: %v: %s", err, out)
	}
	scancelled = true
	harness.WaitFor(t, "no process of "+rootlessUser+" after scancel", 60*time.Second, func() bool {
		return exec.Command("pgrep", "-u", strconv.Itoa(int(uid))).Run() != nil
	})
	harness.WaitFor(t, "the job's directories removed", 10*time.Second, func() bool {
		left, _ := filepath.Glob(fmt.Sprintf("/tmp/hypercore-%d-job%s-*", uid, job))
		_, err := os.Stat(jobDir)
		return len(left) == 0 && os.IsNotExist(err)
	})
}
