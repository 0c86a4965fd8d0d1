package image

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Progress is one pull progress event, enough to draw a progress bar per
// layer and one overall. Events of one layer come in order; Complete never
// decreases and ends equal to Total.
type Progress struct {
	Layer    string // short layer digest (12 hex digits); "" for whole-pull events
	Complete int64  // bytes of this layer present
	Total    int64  // layer size
	Cached   bool   // the layer was already in the content store; nothing downloaded

	CompleteBytes int64 // bytes present across all layers
	TotalBytes    int64 // size of all layers
	Unpacking     bool  // all layers present; the rootfs is being unpacked
	Done          bool  // last event: the image is ready
}

// progressInterval keeps events to about 10 a second per layer.
const progressInterval = 100 * time.Millisecond

// parallelDownloads is how many layers are fetched at once, as docker does.
const parallelDownloads = 3

// Pull resolves ref at its registry (always: a tag may have moved),
// downloads the layers not yet in the content store, unpacks the image if
// that digest is not unpacked yet, and points ref at it. For a multi-arch
// image it picks linux on this machine's architecture. progress may be nil;
// calls to it are serialised.
func (s *Store) Pull(ctx context.Context, ref string, progress func(Progress)) (*Image, error) {
	return s.pull(ctx, ref, progress, false)
}

// pull is Pull that, with pin, also pins the image before it lets a GC
// run, for Acquire.
func (s *Store) pull(ctx context.Context, ref string, progress func(Progress), pin bool) (*Image, error) {
	if _, err := v1.NewHash(ref); err == nil {
		return nil, fmt.Errorf("pull %s: a bare digest names no repository; pull <repository>@%s", ref, ref)
	}
	r, err := parseRef(ref)
	if err != nil {
		return nil, err
	}
	// Cancelling stops sibling layer downloads when one fails.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	img, err := remote.Image(r, s.remoteOptions(ctx)...)
	if err != nil {
		return nil, remoteError(ctx, ref, r, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return nil, remoteError(ctx, ref, r, err)
	}
	manifest, err := v1.ParseManifest(bytes.NewReader(rawManifest))
	if err != nil {
		return nil, fmt.Errorf("pull %s: the registry sent a manifest that is not valid: %w", ref, err)
	}
	if mt, err := img.MediaType(); err != nil || !mt.IsImage() {
		return nil, fmt.Errorf("pull %s: it is a %q, not a container image", ref, mt)
	}

	unlock, err := s.locks.lock(ctx, digest.String())
	if err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	defer unlock()
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()

	if err := s.putBlobBytes(digest, rawManifest); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	cfg, err := s.fetchConfig(img, manifest)
	if err != nil {
		return nil, remoteError(ctx, ref, r, err)
	}
	if cfg.OS != "" && (cfg.OS != s.platform.OS || cfg.Architecture != s.platform.Architecture) {
		slog.Warn("image is built for another platform; it may not run", "ref", ref, "image", cfg.OS+"/"+cfg.Architecture, "node", s.platform.OS+"/"+s.platform.Architecture)
	}
	var compressed int64
	for _, l := range manifest.Layers {
		if l.Size < 0 || l.Size > s.opts.MaxImageSize {
			compressed = -1 // a size no layer has, or one the sum could overflow with
			break
		}
		compressed += l.Size
	}
	if compressed > s.opts.MaxImageSize || compressed < 0 {
		return nil, fmt.Errorf("pull %s: %w: its layers are %d MiB compressed, more than the %d MiB %s allows", ref, ErrTooLarge, compressed>>20, s.opts.MaxImageSize>>20, s.maxImageSizeFlag())
	}
	if b, err := s.pullBudget(); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	} else if err := b.store.take(compressed); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err) // before downloading it
	}
	pp := newPullProgress(progress, manifest.Layers)
	if err := s.fetchLayers(ctx, cancel, img, manifest.Layers, pp); err != nil {
		return nil, remoteError(ctx, ref, r, err)
	}
	pp.send(Progress{Unpacking: true})
	if err := s.unpack(ctx, digest, rawManifest, manifest); err != nil {
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}

	rec := record{Digest: digest.String(), Config: cfg.Config, Blobs: []string{digest.String(), manifest.Config.Digest.String()}, Pulled: time.Now().UTC()}
	if old, ok, err := s.ix.image(rec.Digest); err == nil && ok {
		rec.Pulled = old.Pulled
	}
	for _, l := range manifest.Layers {
		rec.Blobs = append(rec.Blobs, l.Digest.String())
		rec.Size += l.Size
	}
	if err := s.ix.put(r.Name(), rec); err != nil {
		return nil, fmt.Errorf("pull %s: record it in the image index: %w", ref, err)
	}
	if pin {
		s.pin(rec.Digest) // before the deferred RUnlock lets a GC in
	} else {
		s.pinMu.Lock()
		s.lastUsed[rec.Digest] = s.now()
		s.pinMu.Unlock()
	}
	pp.send(Progress{Done: true})
	return s.imageOf(ref, rec), nil
}

// registryAnswerTimeout is how long a registry may take to send the
// headers of an answer. One that accepts the connection and then says
// nothing fails the pull with ErrRegistry (502) instead of holding the
// spawn until its caller gives up.
const registryAnswerTimeout = 30 * time.Second

// registryTransport is remote.DefaultTransport with answers bounded by
// timeout, TLS handshakes included.
func registryTransport(timeout time.Duration) http.RoundTripper {
	t := remote.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = timeout
	t.TLSHandshakeTimeout = min(t.TLSHandshakeTimeout, timeout)
	return t
}

// retryable is go-containerregistry's retry predicate less timeouts: a
// registry that did not answer in time is not asked twice more, so a
// hanging one fails the pull after one timeout, not after three and the
// backoff between them.
func retryable(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() && !errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

func (s *Store) remoteOptions(ctx context.Context) []remote.Option {
	timeout := s.answerTimeout
	if timeout <= 0 {
		timeout = registryAnswerTimeout
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(registryTransport(timeout)),
		remote.WithRetryPredicate(retryable),
		remote.WithAuthFromKeychain(authn.DefaultKeychain),
		remote.WithPlatform(s.platform),
		remote.WithUserAgent("hypercore"),
	}
}

// fetchConfig returns the image config, from the content store if there.
func (s *Store) fetchConfig(img v1.Image, m *v1.Manifest) (*v1.ConfigFile, error) {
	d := m.Config
	if !s.hasBlob(d.Digest, d.Size) {
		raw, err := img.RawConfigFile()
		if err != nil {
			return nil, fmt.Errorf("download image config %s: %w", d.Digest, err)
		}
		if err := s.putBlob(d.Digest, d.Size, bytes.NewReader(raw)); err != nil {
			return nil, err
		}
	}
	raw, err := os.ReadFile(s.blobPath(d.Digest))
	if err != nil {
		return nil, fmt.Errorf("read image config %s: %w", d.Digest, err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("image config %s is not valid: %w", d.Digest, err)
	}
	return cfg, nil
}

// fetchLayers downloads the missing layers, a few at a time.
func (s *Store) fetchLayers(ctx context.Context, cancel func(), img v1.Image, layers []v1.Descriptor, pp *pullProgress) error {
	sem := make(chan struct{}, parallelDownloads)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, d := range layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.fetchLayer(ctx, img, d, pp); err != nil {
				mu.Lock()
				if first == nil {
					first = err
					cancel()
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

func (s *Store) fetchLayer(ctx context.Context, img v1.Image, d v1.Descriptor, pp *pullProgress) error {
	// Another image sharing this layer may be fetching it right now.
	unlock, err := s.locks.lock(ctx, "blob:"+d.Digest.String())
	if err != nil {
		return err
	}
	defer unlock()
	if s.hasBlob(d.Digest, d.Size) || s.hasLayer(d.Digest) {
		pp.layer(d, d.Size, true)
		return nil
	}
	pp.layer(d, 0, false)
	layer, err := img.LayerByDigest(d.Digest)
	if err != nil {
		return fmt.Errorf("download layer %s: %w: %w", d.Digest, errRegistryAnswer, err)
	}
	rc, err := layer.Compressed()
	if err != nil {
		return fmt.Errorf("download layer %s: %w: %w", d.Digest, errRegistryAnswer, err)
	}
	defer rc.Close()
	cr := &countingReader{r: rc, report: func(n int64) { pp.layer(d, n, false) }}
	if err := s.putBlob(d.Digest, d.Size, cr); err != nil {
		return fmt.Errorf("download layer %s (pull again; if this persists the registry holds a damaged copy): %w", d.Digest, err)
	}
	pp.layer(d, d.Size, false)
	return nil
}

// pullProgress turns per-layer byte counts into Progress events.
type pullProgress struct {
	fn       func(Progress)
	mu       sync.Mutex
	total    int64
	complete int64
	done     map[v1.Hash]int64
}

func newPullProgress(fn func(Progress), layers []v1.Descriptor) *pullProgress {
	p := &pullProgress{fn: fn, done: map[v1.Hash]int64{}}
	for _, l := range layers {
		p.total += l.Size
	}
	return p
}

func (p *pullProgress) layer(d v1.Descriptor, n int64, cached bool) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n < p.done[d.Digest] {
		return // a shared layer listed twice; keep Complete monotonic
	}
	p.complete += n - p.done[d.Digest]
	p.done[d.Digest] = n
	short := d.Digest.Hex
	if len(short) > 12 {
		short = short[:12]
	}
	p.fn(Progress{Layer: short, Complete: n, Total: d.Size, Cached: cached, CompleteBytes: p.complete, TotalBytes: p.total})
}

func (p *pullProgress) send(ev Progress) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ev.CompleteBytes, ev.TotalBytes = p.complete, p.total
	p.fn(ev)
}

// countingReader reports bytes read, at most once per progressInterval.
type countingReader struct {
	r      io.Reader
	n      int64
	last   time.Time
	report func(int64)
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if now := time.Now(); n > 0 && now.Sub(c.last) >= progressInterval {
		c.last = now
		c.report(c.n)
	}
	return n, err
}

// remoteError says which ref failed and what to check, marks it with
// ErrNotFound or ErrRegistry, and keeps the cause for errors.Is/As.
func remoteError(ctx context.Context, ref string, r name.Reference, err error) error {
	reg := r.Context().RegistryStr()
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusNotFound || hasCode(terr, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode):
			return fmt.Errorf("pull %s: %w in registry %s; check the repository name and tag (a private repository also needs credentials in ~/.docker/config.json): %w", ref, ErrNotFound, reg, err)
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden || hasCode(terr, transport.UnauthorizedErrorCode, transport.DeniedErrorCode):
			return fmt.Errorf("pull %s: %w: %s denied access; check the credentials for it in ~/.docker/config.json (docker login %s): %w", ref, ErrRegistry, reg, reg, err)
		default:
			return fmt.Errorf("pull %s: %w: %s failed; check the registry and try again: %w", ref, ErrRegistry, reg, err)
		}
	}
	var opErr *net.OpError
	var dnsErr *net.DNSError
	if errors.As(err, &opErr) || errors.As(err, &dnsErr) {
		return fmt.Errorf("pull %s: %w: cannot reach %s; check that it is running and that this machine can connect to it: %w", ref, ErrRegistry, reg, err)
	}
	if errors.Is(err, errBadBlob) {
		return fmt.Errorf("pull %s: %w: registry %s sent a blob that does not match its manifest; pull again, and if it persists the registry holds a damaged copy: %w", ref, ErrRegistry, reg, err)
	}
	if errors.Is(err, errRegistryAnswer) {
		return fmt.Errorf("pull %s: %w: registry %s answered with something unusable; check the registry and try again: %w", ref, ErrRegistry, reg, err)
	}
	var urlErr *url.Error
	if errors.As(err, &urlErr) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("pull %s: %w: registry %s broke off or did not answer in time; check it and try again: %w", ref, ErrRegistry, reg, err)
	}
	return fmt.Errorf("pull %s from registry %s: %w", ref, reg, err)
}

// errRegistryAnswer marks a failure in what a registry answered, as
// opposed to this node's disk or logic.
var errRegistryAnswer = errors.New("bad answer from the registry")

func hasCode(terr *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range terr.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}
