package image

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// TestPullHTTPDImage pulls the real test image over plain HTTP from a
// loopback registry, under both 127.0.0.1 and localhost, and checks the
// rootfs and config are what a runtime needs.
func TestPullHTTPDImage(t *testing.T) {
	host := testutil.Registry(t)
	img := testutil.HTTPDImage(t)
	testutil.Push(t, host+"/web:1", img)
	want := digestOf(t, img)

	for _, ref := range []string{host + "/web:1", strings.Replace(host, "127.0.0.1", "localhost", 1) + "/web:1"} {
		t.Run(ref, func(t *testing.T) {
			s := openStore(t)
			var events []Progress
			got, err := s.Pull(context.Background(), ref, func(p Progress) { events = append(events, p) })
			if err != nil {
				t.Fatal(err)
			}
			if got.Digest != want || got.Ref != ref {
				t.Errorf("Pull = %s %s, want %s %s", got.Ref, got.Digest, ref, want)
			}
			if got.Rootfs != filepath.Join(s.dir, "rootfs", strings.TrimPrefix(want, "sha256:")) {
				t.Errorf("Rootfs = %s", got.Rootfs)
			}
			if !slices.Equal(got.Config.Cmd, []string{"/bin/httpd", "-f", "-v", "-p", "8080", "-h", "/www"}) || got.Config.WorkingDir != "/www" || !slices.Contains(got.Config.Env, "GREETING=hello") {
				t.Errorf("Config = %+v", got.Config)
			}
			html, err := os.ReadFile(filepath.Join(got.Rootfs, "www/index.html"))
			if err != nil || string(html) != testutil.IndexHTML {
				t.Errorf("www/index.html = %q, %v", html, err)
			}
			if fi, err := os.Stat(filepath.Join(got.Rootfs, "bin/busybox")); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("bin/busybox: %v %v", fi, err)
			}
			if target, err := os.Readlink(filepath.Join(got.Rootfs, "bin/sh")); err != nil || target != "busybox" {
				t.Errorf("bin/sh -> %q, %v", target, err)
			}
			if fi, err := os.Stat(got.Rootfs); err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("rootfs mode: %v %v", fi, err)
			}
			checkProgress(t, events, false)

			for _, key := range []string{ref, want} {
				if g, err := s.Get(key); err != nil || g.Digest != want || g.Rootfs != got.Rootfs {
					t.Errorf("Get(%s) = %+v, %v", key, g, err)
				}
			}
			list, err := s.List()
			if err != nil || len(list) != 1 || list[0].Digest != want || list[0].Size <= 0 {
				t.Errorf("List = %+v, %v", list, err)
			}
		})
	}
}

// checkProgress asserts the events make a sane progress bar.
func checkProgress(t *testing.T, events []Progress, wantCached bool) {
	t.Helper()
	if len(events) == 0 || !events[len(events)-1].Done {
		t.Fatalf("last progress event is not Done: %+v", events)
	}
	last := map[string]int64{}
	var total int64
	var sawUnpacking bool
	for _, e := range events {
		if e.Unpacking {
			sawUnpacking = true
		}
		if e.Layer == "" {
			continue
		}
		if e.Complete < last[e.Layer] || e.Complete > e.Total {
			t.Errorf("layer %s went to %d/%d after %d", e.Layer, e.Complete, e.Total, last[e.Layer])
		}
		if e.Cached != wantCached {
			t.Errorf("layer %s Cached = %v, want %v", e.Layer, e.Cached, wantCached)
		}
		if _, seen := last[e.Layer]; !seen {
			total += e.Total
		}
		last[e.Layer] = e.Complete
	}
	done := events[len(events)-1]
	if !sawUnpacking || len(last) == 0 || done.TotalBytes != total || done.CompleteBytes != total {
		t.Errorf("final %+v, layers %v summing to %d, unpacking seen %v", done, last, total, sawUnpacking)
	}
}

// TestSecondPullDownloadsNoLayer checks the content store: a second Pull
// asks for the manifest only, and Ensure does not touch the network.
func TestSecondPullDownloadsNoLayer(t *testing.T) {
	reg := newCountingRegistry(t)
	img := imageOf(t, "/a", layerOf(t, fileE("a", "one")), layerOf(t, fileE("b", "two")))
	ref := reg.Host + "/two:layers"
	testutil.Push(t, ref, img)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	cfgDigest, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t)

	reg.reset()
	if _, err := s.Pull(context.Background(), ref, nil); err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, _ := l.Digest()
		if n := reg.count("GET", "/blobs/"+d.String()); n != 1 {
			t.Errorf("first pull fetched layer %s %d times, want 1", d, n)
		}
	}

	reg.reset()
	var events []Progress
	got, err := s.Pull(context.Background(), ref, func(p Progress) { events = append(events, p) })
	if err != nil {
		t.Fatal(err)
	}
	if n := reg.count("GET", "/blobs/"); n != 0 {
		t.Errorf("second pull fetched %d blobs (config %s), want 0: %v", n, cfgDigest, reg.reqs)
	}
	if n := reg.count("GET", "/two/manifests/layers"); n == 0 {
		t.Errorf("second pull did not ask the registry for the tag: %v", reg.reqs)
	}
	checkProgress(t, events, true)
	if got.Digest != digestOf(t, img) {
		t.Errorf("digest %s", got.Digest)
	}

	reg.reset()
	if _, err := s.Ensure(context.Background(), ref, nil); err != nil {
		t.Fatal(err)
	}
	if n := reg.total(); n != 0 {
		t.Errorf("Ensure of a pulled image made %d requests, want 0: %v", n, reg.reqs)
	}
	// Ensure works with the registry gone, too.
	reg.srv.Close()
	if e, err := s.Ensure(context.Background(), ref, nil); err != nil || e.Digest != got.Digest {
		t.Errorf("Ensure with registry down = %+v, %v", e, err)
	}
}

// TestEnsurePullsWhenMissing checks Ensure falls back to Pull.
func TestEnsurePullsWhenMissing(t *testing.T) {
	host := testutil.Registry(t)
	img := imageOf(t, "/x", layerOf(t, fileE("x", "x")))
	testutil.Push(t, host+"/ensure:1", img)
	s := openStore(t)
	got, err := s.Ensure(context.Background(), host+"/ensure:1", nil)
	if err != nil || got.Digest != digestOf(t, img) {
		t.Fatalf("Ensure = %+v, %v", got, err)
	}
}

func TestPullByDigest(t *testing.T) {
	host := testutil.Registry(t)
	img := imageOf(t, "/d", layerOf(t, fileE("d", "by digest")))
	testutil.Push(t, host+"/bydigest:1", img)
	want := digestOf(t, img)
	ref := host + "/bydigest@" + want
	s := openStore(t)
	got, err := s.Pull(context.Background(), ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != want || got.Ref != ref {
		t.Errorf("Pull = %s %s", got.Ref, got.Digest)
	}
	if data, err := os.ReadFile(filepath.Join(got.Rootfs, "d")); err != nil || string(data) != "by digest" {
		t.Errorf("d = %q, %v", data, err)
	}
	if g, err := s.Get(ref); err != nil || g.Digest != want {
		t.Errorf("Get(%s) = %+v, %v", ref, g, err)
	}
	// The tag was never pulled here.
	if _, err := s.Get(host + "/bydigest:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get of the tag = %v, want ErrNotFound", err)
	}
}

// TestPullMultiArch checks an index resolves to this machine's image.
func TestPullMultiArch(t *testing.T) {
	host := testutil.Registry(t)
	mine := imageOf(t, "/mine", layerOf(t, fileE("arch", "mine")))
	other := imageOf(t, "/other", layerOf(t, fileE("arch", "other")))
	myArch := platformOf(t, mine).Architecture
	otherArch := "arm64"
	if myArch == "arm64" {
		otherArch = "amd64"
	}
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch}}},
		mutate.IndexAddendum{Add: mine, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: myArch}}},
	)
	r, err := name.ParseReference(host + "/multi:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	got, err := s.Pull(context.Background(), host+"/multi:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digestOf(t, mine) {
		t.Errorf("Digest = %s, want this platform's %s", got.Digest, digestOf(t, mine))
	}
	if data, err := os.ReadFile(filepath.Join(got.Rootfs, "arch")); err != nil || string(data) != "mine" {
		t.Errorf("arch = %q, %v", data, err)
	}
}

func platformOf(t *testing.T, img v1.Image) v1.Platform {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture}
}

// TestPullUnknownImage checks a missing repo or tag names the ref, says
// what to check, wraps ErrNotFound and leaves nothing behind.
func TestPullUnknownImage(t *testing.T) {
	host := testutil.Registry(t)
	testutil.Push(t, host+"/known:1", imageOf(t, "/k", layerOf(t, fileE("k", "k"))))
	s := openStore(t)
	for _, ref := range []string{host + "/known:nope", host + "/nosuchrepo:1"} {
		_, err := s.Pull(context.Background(), ref, nil)
		if err == nil {
			t.Fatalf("Pull(%s) succeeded", ref)
		}
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), "check the repository name and tag") {
			t.Errorf("Pull(%s) error = %v", ref, err)
		}
		if _, err := s.Ensure(context.Background(), ref, nil); !errors.Is(err, ErrNotFound) {
			t.Errorf("Ensure(%s) error = %v", ref, err)
		}
	}
	assertEmptyStore(t, s)
}

// TestPullRegistryDown checks an unreachable registry names the ref and
// the registry, says what to check and leaves nothing behind.
func TestPullRegistryDown(t *testing.T) {
	addr := closedPort(t)
	ref := addr + "/web:1"
	s := openStore(t)
	_, err := s.Pull(context.Background(), ref, nil)
	if err == nil {
		t.Fatal("Pull from a closed port succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, ref) || !strings.Contains(msg, "cannot reach "+addr) || !strings.Contains(msg, "check that it is running") || !errors.Is(err, ErrRegistry) {
		t.Errorf("error = %v", err)
	}
	if errors.Is(err, ErrNotFound) {
		t.Errorf("a down registry is not a missing image: %v", err)
	}
	assertEmptyStore(t, s)
}

func TestPullInvalidRef(t *testing.T) {
	s := openStore(t)
	_, err := s.Pull(context.Background(), "UPPER/Case::bad", nil)
	if err == nil || !strings.Contains(err.Error(), `invalid image reference "UPPER/Case::bad"`) {
		t.Errorf("error = %v", err)
	}
}

// TestConcurrentPulls runs Pull and Ensure of one ref at once: each layer
// is downloaded once and every caller gets the same complete image.
func TestConcurrentPulls(t *testing.T) {
	reg := newCountingRegistry(t)
	layer := layerOf(t, fileE("c/data", strings.Repeat("concurrent ", 10000)))
	img := imageOf(t, "/c", layer)
	ref := reg.Host + "/conc:1"
	testutil.Push(t, ref, img)
	reg.reset()
	s := openStore(t)

	const n = 6
	var wg sync.WaitGroup
	results := make([]*Image, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i%2 == 0 {
				results[i], errs[i] = s.Pull(context.Background(), ref, func(Progress) {})
			} else {
				results[i], errs[i] = s.Ensure(context.Background(), ref, nil)
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if results[i].Digest != digestOf(t, img) || results[i].Rootfs != results[0].Rootfs {
			t.Errorf("caller %d got %+v", i, results[i])
		}
	}
	d, _ := layer.Digest()
	if got := reg.count("GET", "/blobs/"+d.String()); got != 1 {
		t.Errorf("layer fetched %d times, want 1", got)
	}
	data, err := os.ReadFile(filepath.Join(results[0].Rootfs, "c/data"))
	if err != nil || string(data) != strings.Repeat("concurrent ", 10000) {
		t.Errorf("c/data: %d bytes, %v", len(data), err)
	}
	if left := tree(t, s.tmpDir()); len(left) != 0 {
		t.Errorf("tmp holds %v", left)
	}
}

// TestPullCancelled checks a cancelled pull fails and indexes nothing.
func TestPullCancelled(t *testing.T) {
	host := testutil.Registry(t)
	testutil.Push(t, host+"/cancel:1", imageOf(t, "/c", layerOf(t, fileE("c", "c"))))
	s := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Pull(ctx, host+"/cancel:1", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("error = %v, want context.Canceled", err)
	}
	assertEmptyStore(t, s)
}

// TestPullCorruptLayer has the registry serve a layer whose bytes do not
// match its digest, or whose size is not the manifest's: the pull fails,
// names the ref and the layer, and stores no layer, rootfs or image.
func TestPullCorruptLayer(t *testing.T) {
	layer := layerOf(t, fileE("f", strings.Repeat("payload", 100)))
	ld, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	reg := newTamperingRegistry(t, ld)
	ref := reg.host + "/corrupt:1"
	testutil.Push(t, ref, imageOf(t, "/f", layer))
	for what, tamper := range tampers {
		t.Run(what, func(t *testing.T) {
			reg.serve(tamper)
			s := openStore(t)
			_, err := s.Pull(context.Background(), ref, nil)
			if err == nil || !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), ld.String()) {
				t.Fatalf("Pull of a corrupt layer = %v", err)
			}
			// A registry's fault, named, so the API answers 502.
			if !errors.Is(err, ErrRegistry) || !strings.Contains(err.Error(), "registry "+reg.host) {
				t.Errorf("Pull of a corrupt layer = %v; want ErrRegistry naming registry %s", err, reg.host)
			}
			if _, err := os.Stat(s.blobPath(ld)); !os.IsNotExist(err) {
				t.Errorf("corrupt layer was stored: %v", err)
			}
			if left := tree(t, filepath.Join(s.dir, "rootfs")); len(left) != 0 {
				t.Errorf("rootfs/ holds %v", left)
			}
			if left := tree(t, s.tmpDir()); len(left) != 0 {
				t.Errorf("tmp/ holds %v", left)
			}
			if list, err := s.List(); err != nil || len(list) != 0 {
				t.Errorf("List = %v, %v", list, err)
			}
		})
	}
}

func TestPullBareDigest(t *testing.T) {
	s := openStore(t)
	d := "sha256:" + strings.Repeat("a", 64)
	if _, err := s.Pull(context.Background(), d, nil); err == nil || !strings.Contains(err.Error(), "<repository>@"+d) {
		t.Errorf("Pull(%s) = %v", d, err)
	}
}

// TestPullDenied checks a registry refusing access points at credentials.
func TestPullDenied(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"login first"}]}`, http.StatusUnauthorized)
	}))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/private:1"
	s := openStore(t)
	_, err := s.Pull(context.Background(), ref, nil)
	if err == nil || !errors.Is(err, ErrRegistry) || !strings.Contains(err.Error(), ref) || !strings.Contains(err.Error(), "~/.docker/config.json") {
		t.Errorf("error = %v", err)
	}
	assertEmptyStore(t, s)
}

// TestPullHangingRegistry has a registry accept connections and never
// answer: the pull fails with ErrRegistry naming it, soon after the answer
// timeout, and stores nothing.
func TestPullHangingRegistry(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() }) // held open, never answered
		}
	}()
	s := openStore(t)
	s.answerTimeout = 200 * time.Millisecond
	ref := l.Addr().String() + "/web:1"
	start := time.Now()
	_, err = s.Pull(context.Background(), ref, nil)
	if err == nil || !errors.Is(err, ErrRegistry) || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Fatalf("Pull from a registry that never answers = %v; want ErrRegistry naming %s", err, l.Addr())
	}
	t.Logf("failed after %s: %v", time.Since(start).Round(time.Millisecond), err)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the pull took %s to give up", d)
	}
	assertEmptyStore(t, s)
}
