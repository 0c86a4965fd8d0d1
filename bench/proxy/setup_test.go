package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hypercore-dev/hypercore/internal/testutil/harness"
)

// benchDir is the test's temporary directory, readable by nginx's workers
// (they run as nobody).
func benchDir(t *testing.T) string {
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// writePage writes the backend's static file and returns its content.
func writePage(t *testing.T, dir string) []byte {
	page := bytes.Repeat([]byte("hypercore proxy bench page.\n"), pageSize/28+1)[:pageSize-1]
	page = append(page, '\n')
	www := filepath.Join(dir, "www")
	if err := os.Mkdir(www, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), page, 0o644); err != nil {
		t.Fatal(err)
	}
	return page
}

// resolveInNS makes <id>.localhost resolve to 127.0.0.1 for programs run
// with `ip netns exec` in ns, which bind-mounts /etc/netns/<ns>/hosts over
// /etc/hosts. wrk needs the name in its URL, since it sends the URL's host
// as TLS SNI, and resolving it must not reach for DNS.
func resolveInNS(t *testing.T, ns *harness.NetNS) {
	d := filepath.Join("/etc/netns", ns.Name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	hosts := "127.0.0.1 localhost\n127.0.0.1 " + host + "\n"
	if err := os.WriteFile(filepath.Join(d, "hosts"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
}

// backendConf is the backend both proxies forward to: one nginx worker
// serving the static page, echoing what the proxy sent in X-Seen-*
// headers so that checkSameProxy can compare the two proxies.
func backendConf(dir string) string {
	return fmt.Sprintf(`worker_processes 1;
pid %[1]s/backend.pid;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen %[2]s;
        root %[1]s/www;
        location / {
            add_header X-Seen-Host $http_host;
            add_header X-Seen-XFF $http_x_forwarded_for;
            add_header X-Seen-Proto $http_x_forwarded_proto;
        }
    }
}
`, dir, backendAddr)
}

// proxyConf is nginx as the same reverse proxy as hypercore's, with procs
// worker processes: Host
// *.localhost to the backend over a pool of kept-alive connections, the
// Host header passed on, X-Forwarded-For/-Host/-Proto set, 404 for hosts
// outside *.localhost. TLS is set to what Go's server does: TLS 1.2 and
// 1.3 (nginx 1.22 leaves 1.3 out by default), and AES-128-GCM first, which
// Go picks on a machine with AES instructions. keepalive_requests is
// raised from nginx's default of 1000 on both sides, because hypercore
// closes neither kind of connection after a count, and a close (a new TLS
// handshake for wrk) would be counted against nginx.
func proxyConf(dir, certPath, keyPath string, procs int) string {
	return fmt.Sprintf(`worker_processes %[8]d;
pid %[1]s/proxy.pid;
daemon off;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    ssl_certificate %[2]s;
    ssl_certificate_key %[3]s;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
    upstream backend {
        server %[4]s;
        keepalive 512;
        keepalive_requests 1000000;
    }
    server {
        listen %[5]s default_server;
        listen %[6]s ssl http2 default_server;
        return 404;
    }
    server {
        listen %[5]s;
        listen %[6]s ssl http2;
        server_name *.%[7]s;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Proto $scheme;
        }
    }
}
`, dir, certPath, keyPath, backendAddr, ngHTTP, ngHTTPS, baseDomain, procs)
}

// startNginx runs nginx in the foreground in ns with conf, stopped when the
// test ends. Its CPU time is the master's and its workers'.
func startNginx(t *testing.T, ns *harness.NetNS, dir, name, conf string) contender {
	t.Helper()
	prefix := filepath.Join(dir, name)
	if err := os.Mkdir(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	errLog := filepath.Join(prefix, "error.log")
	cmd := ns.Command("nginx", "-p", prefix, "-c", confPath, "-e", errLog)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() { stop(cmd, exited) })
	select {
	case <-exited:
		b, _ := os.ReadFile(errLog)
		t.Fatalf("nginx %s exited at start: %s%s", name, out.String(), b)
	case <-time.After(300 * time.Millisecond):
	}
	// `ip netns exec` execs nginx, so the command's pid is nginx's master.
	pid := cmd.Process.Pid
	return contender{
		name: "nginx",
		addr: map[string]string{"http": ngHTTP, "https": ngHTTPS},
		cpu:  func() (time.Duration, error) { return treeCPU(pid) },
		pid:  pid,
	}
}

// startHypercore builds cmd/proxybench and runs it in ns: hypercore's
// proxy with one route, <id>.localhost to the backend, on HTTP and HTTPS,
// with GOMAXPROCS=procs.
// PROXYBENCH_BIN names a binary to run instead, such as one built from
// another commit to compare with.
func startHypercore(t *testing.T, ns *harness.NetNS, dir, certPath, keyPath string, procs int) contender {
	t.Helper()
	bin := os.Getenv("PROXYBENCH_BIN")
	if bin == "" {
		bin = filepath.Join(dir, "proxybench")
		build := exec.Command("go", "build", "-o", bin, "./bench/proxy/cmd/proxybench")
		build.Dir = "../.."
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build proxybench: %v\n%s", err, out)
		}
	} else {
		t.Logf("hypercore: running PROXYBENCH_BIN=%s", bin)
	}
	cmd := ns.Command(bin, "-base", baseDomain, "-id", workloadID, "-backend", backendAddr,
		"-http", hcHTTP, "-https", hcHTTPS, "-cert", certPath, "-key", keyPath)
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(procs))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start proxybench: %v", err)
	}
	exited := make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ready <- sc.Scan() && sc.Text() == "ready"
		io.Copy(io.Discard, stdout)
		cmd.Wait() // only after the last read from stdout
		close(exited)
	}()
	t.Cleanup(func() {
		stop(cmd, exited)
		if t.Failed() {
			t.Logf("proxybench log:\n%s", logs.String())
		}
	})
	select {
	case ok := <-ready:
		if !ok {
			<-exited
			t.Fatalf("proxybench did not start:\n%s", logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("proxybench not ready after 30s") // its log follows, from the cleanup
	}
	pid := cmd.Process.Pid
	return contender{
		name: "hypercore",
		addr: map[string]string{"http": hcHTTP, "https": hcHTTPS},
		cpu:  func() (time.Duration, error) { return treeCPU(pid) },
		pid:  pid,
	}
}

// stop ends a server with SIGTERM (nginx's fast shutdown), then SIGKILL.
func stop(cmd *exec.Cmd, exited <-chan struct{}) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// waitListening waits until addr in ns accepts TCP.
func waitListening(t *testing.T, ns *harness.NetNS, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := ns.Dial(context.Background(), "tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listens on %s in the bench namespace: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkSameProxy makes sure c proxies like the other contender: the page
// over HTTP and HTTPS, the Host header passed on, X-Forwarded-For and
// X-Forwarded-Proto set, and 404 for a host it does not serve.
func checkSameProxy(t *testing.T, ns *harness.NetNS, c contender, certPath string, page []byte) {
	t.Helper()
	pem, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	for _, p := range []string{"http", "https"} {
		addr := c.addr[p]
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return ns.Dial(ctx, "tcp", addr)
			},
			TLSClientConfig: &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}},
		}}
		get := func(h string) (*http.Response, []byte) {
			resp, err := client.Get(p + "://" + h + "/")
			if err != nil {
				t.Fatalf("%s %s GET %s: %v", c.name, p, h, err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("%s %s GET %s: %v", c.name, p, h, err)
			}
			return resp, b
		}
		resp, body := get(host)
		if resp.StatusCode != 200 || !bytes.Equal(body, page) {
			t.Fatalf("%s %s: %d, %d bytes; want 200 and the %d-byte page", c.name, p, resp.StatusCode, len(body), len(page))
		}
		for k, want := range map[string]string{"X-Seen-Host": host, "X-Seen-Xff": "127.0.0.1", "X-Seen-Proto": p} {
			if got := resp.Header.Get(k); got != want {
				t.Fatalf("%s %s: the backend saw %s %q, want %q", c.name, p, strings.TrimPrefix(k, "X-Seen-"), got, want)
			}
		}
		// Over HTTP only: hypercore has no certificate for another name,
		// so its TLS handshake fails instead.
		if p == "http" {
			if resp, _ := get("other.test"); resp.StatusCode != 404 {
				t.Fatalf("%s %s: host other.test: %d, want 404", c.name, p, resp.StatusCode)
			}
		}
		client.CloseIdleConnections()
	}
}

// tlsParams says which TLS version and cipher suite OpenSSL's defaults,
// which wrk uses too, negotiate with the server at addr in ns.
func tlsParams(ns *harness.NetNS, addr string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns.Name,
		"openssl", "s_client", "-connect", addr, "-servername", host, "-brief")
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		for _, k := range []string{"Protocol version", "Ciphersuite", "Peer Temp Key"} {
			if v, ok := strings.CutPrefix(l, k+":"); ok {
				got = append(got, strings.TrimSpace(v))
			}
		}
	}
	if len(got) == 0 {
		return "unknown (openssl s_client said: " + strings.TrimSpace(string(out)) + ")"
	}
	return strings.Join(got, ", ")
}

// clockTick is the unit of /proc/<pid>/stat's CPU times (USER_HZ, 100 on
// Linux).
const clockTick = 10 * time.Millisecond

// treeCPU is the user and system CPU time of pid and of its children
// (nginx's workers), from /proc.
func treeCPU(pid int) (time.Duration, error) {
	total, err := procCPU(pid)
	if err != nil {
		return 0, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		if f, err := statFields(child); err == nil && f[1] == strconv.Itoa(pid) {
			if d, err := procCPU(child); err == nil {
				total += d
			}
		}
	}
	return total, nil
}

func procCPU(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// statFields returns the fields of /proc/pid/stat after the command name:
// [0] is the state, [1] the parent pid, [11] utime, [12] stime.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}
