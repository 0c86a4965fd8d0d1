package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	v1 "github.com/hypercore-dev/hypercore/api/hypercore/v1"
	"github.com/hypercore-dev/hypercore/api/hypercore/v1/hypercorev1connect"
	"github.com/hypercore-dev/hypercore/internal/image"
)

// pruneBackend answers PruneImages; any other call would panic, which is
// what a test that makes none wants.
type pruneBackend struct {
	Backend
	res   image.GCResult
	err   error
	calls int
}

func (b *pruneBackend) PruneImages(context.Context) (image.GCResult, error) {
	b.calls++
	return b.res, b.err
}

// TestPruneImages calls NodeService.PruneImages as the CLI does and as
// docs/api.md shows with curl, and checks a failure reaches the caller.
func TestPruneImages(t *testing.T) {
	b := &pruneBackend{res: image.GCResult{Removed: []string{"sha256:" + strings.Repeat("a", 64)}, Freed: 2060288}}
	srv := httptest.NewServer(New(b, Options{Token: "t"}))
	defer srv.Close()
	hc := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		r.Header.Set("Authorization", "Bearer t")
		return http.DefaultTransport.RoundTrip(r)
	})}
	c := hypercorev1connect.NewNodeServiceClient(hc, srv.URL)
	res, err := c.PruneImages(context.Background(), connect.NewRequest(&v1.PruneImagesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Msg.Removed, b.res.Removed) || res.Msg.FreedBytes != b.res.Freed {
		t.Errorf("PruneImages = %v, want %+v", res.Msg, b.res)
	}

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/hypercore.v1.NodeService/PruneImages", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Removed    []string `json:"removed"`
		FreedBytes string   `json:"freedBytes"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("JSON call: %s, %v", resp.Status, err)
	}
	if !slices.Equal(body.Removed, b.res.Removed) || body.FreedBytes != "2060288" {
		t.Errorf("JSON answer = %+v", body)
	}

	b.err = errors.New("image store cleanup (run GC again to retry): disk on fire")
	_, err = c.PruneImages(context.Background(), connect.NewRequest(&v1.PruneImagesRequest{}))
	if connect.CodeOf(err) != connect.CodeInternal || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("failed PruneImages = %v, want an internal error that says why", err)
	}
	if b.calls != 3 {
		t.Errorf("backend called %d times, want 3", b.calls)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
