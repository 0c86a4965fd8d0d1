package image

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/hypercore-dev/hypercore/internal/testutil"
)

// tamperingRegistry is an in-process registry that serves one blob as
// tamper makes it, when tamper is set, and everything else as pushed.
type tamperingRegistry struct {
	host   string
	blob   v1.Hash
	mu     sync.Mutex
	tamper func([]byte) []byte
}

func newTamperingRegistry(t *testing.T, blob v1.Hash) *tamperingRegistry {
	t.Helper()
	tr := &tamperingRegistry{blob: blob}
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tr.mu.Lock()
		tamper := tr.tamper
		tr.mu.Unlock()
		if tamper == nil || r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+blob.String()) {
			reg.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		reg.ServeHTTP(rec, r)
		w.WriteHeader(rec.Code)
		w.Write(tamper(rec.Body.Bytes()))
	}))
	t.Cleanup(srv.Close)
	tr.host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

func (tr *tamperingRegistry) serve(tamper func([]byte) []byte) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.tamper = tamper
}

// Ways to damage a blob on its way from the registry.
var tampers = map[string]func([]byte) []byte{
	"a byte changed": func(b []byte) []byte {
		b = bytes.Clone(b)
		b[len(b)/2] ^= 0xff
		return b
	},
	"cut short":   func(b []byte) []byte { return b[:len(b)-1] },
	"a byte more": func(b []byte) []byte { return append(bytes.Clone(b), 0) },
}

// unverified is an image whose layers are read from the registry as they
// come, without the digest and size checks of go-containerregistry's
// reader: what the store is handed if a reader (this library's or
// another's) stops checking.
type unverified struct {
	v1.Image
	blobs string // the repository's blob URL, ending in "/"
}

func (u unverified) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := u.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return unverifiedLayer{Layer: l, url: u.blobs + h.String()}, nil
}

type unverifiedLayer struct {
	v1.Layer
	url string
}

func (l unverifiedLayer) Compressed() (io.ReadCloser, error) {
	resp, err := http.Get(l.url)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", l.url, resp.Status)
	}
	return resp.Body, nil
}

// TestStoreChecksBlobsItself: the content store takes a layer only if its
// bytes have the digest and the size the manifest gives, whatever reader
// they come through. On a real pull the library's reader fails first
// (TestPullCorruptLayer); here the layer comes from the registry
// without it, so the refusal is the store's own.
func TestStoreChecksBlobsItself(t *testing.T) {
	layer := layerOf(t, fileE("f", strings.Repeat("payload", 100)))
	ld, err := layer.Digest()
	if err != nil {
		t.Fatal(err)
	}
	reg := newTamperingRegistry(t, ld)
	ref := reg.host + "/raw:1"
	testutil.Push(t, ref, imageOf(t, "/f", layer))
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	remoteImg, err := remote.Image(r)
	if err != nil {
		t.Fatal(err)
	}
	img := unverified{Image: remoteImg, blobs: "http://" + reg.host + "/v2/raw/blobs/"}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	desc := m.Layers[0]
	wrongSize := func(delta int64) v1.Descriptor {
		d := desc
		d.Size += delta
		return d
	}

	cases := map[string]struct {
		tamper func([]byte) []byte
		desc   v1.Descriptor
	}{
		// The size the manifest gives, other bytes: only the digest tells.
		"a byte changed": {tampers["a byte changed"], desc},
		"cut short":      {tampers["cut short"], desc},
		"a byte more":    {tampers["a byte more"], desc},
		// The right bytes, another size in the manifest: only the size tells.
		"the manifest says a byte more": {nil, wrongSize(1)},
		"the manifest says a byte less": {nil, wrongSize(-1)},
	}
	for what, c := range cases {
		t.Run(what, func(t *testing.T) {
			reg.serve(c.tamper)
			s := openStore(t)
			err := s.fetchLayer(context.Background(), img, c.desc, newPullProgress(nil, nil))
			if err == nil || !strings.Contains(err.Error(), ld.String()) || !strings.Contains(err.Error(), "pull again") {
				t.Fatalf("fetchLayer = %v, want a refusal naming %s", err, ld)
			}
			if _, err := os.Stat(s.blobPath(ld)); !os.IsNotExist(err) {
				t.Errorf("the damaged layer was stored: %v", err)
			}
			if left := tree(t, s.tmpDir()); len(left) != 0 {
				t.Errorf("tmp/ holds %v", left)
			}
		})
	}

	// The same path takes the layer as it was pushed.
	reg.serve(nil)
	s := openStore(t)
	if err := s.fetchLayer(context.Background(), img, desc, newPullProgress(nil, nil)); err != nil {
		t.Fatal(err)
	}
	if !s.hasBlob(ld, desc.Size) {
		t.Error("the intact layer was not stored")
	}
}
