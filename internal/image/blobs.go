package image

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The content store holds manifests, configs and compressed layers by
// digest under blobs/sha256/<hex>. A blob appears there only by rename after
// its digest was checked, so a present blob is a complete, correct blob.

func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.dir, "blobs", h.Algorithm, h.Hex)
}

// hasBlob reports whether the blob is stored. The size check is cheap
// insurance against a blob replaced behind our back.
func (s *Store) hasBlob(h v1.Hash, size int64) bool {
	fi, err := os.Stat(s.blobPath(h))
	return err == nil && fi.Mode().IsRegular() && fi.Size() == size
}

// putBlob copies r into the store as blob h, failing (and storing nothing)
// unless the bytes have digest h and length size.
func (s *Store) putBlob(h v1.Hash, size int64, r io.Reader) (err error) {
	if h.Algorithm != "sha256" {
		return fmt.Errorf("blob %s uses digest algorithm %q; only sha256 is supported", h, h.Algorithm)
	}
	f, err := os.CreateTemp(s.tmpDir(), "blob-")
	if err != nil {
		return fmt.Errorf("create temp file for blob %s: %w", h, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	sum := sha256.New()
	// One byte past size is enough to tell a wrong blob; a registry that
	// sends more is not given the disk for it.
	src := &readErrReader{r: io.LimitReader(r, size+1)}
	n, err := io.Copy(io.MultiWriter(f, sum), src)
	if err != nil {
		if src.err != nil {
			return fmt.Errorf("read blob %s: %w: %w", h, errBadBlob, err)
		}
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	if n != size {
		return fmt.Errorf("blob %s: got %d bytes, the manifest says %d: %w", h, n, size, errBadBlob)
	}
	if got := hex.EncodeToString(sum.Sum(nil)); got != h.Hex {
		return fmt.Errorf("blob %s: content has digest sha256:%s: %w", h, got, errBadBlob)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	// Sync before rename so a crash cannot leave a renamed, empty blob.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write blob %s: %w", h, err)
	}
	if err := os.Rename(f.Name(), s.blobPath(h)); err != nil {
		return fmt.Errorf("store blob %s: %w", h, err)
	}
	return nil
}

// putBlobBytes stores data as blob h unless it is there already.
func (s *Store) putBlobBytes(h v1.Hash, data []byte) error {
	if s.hasBlob(h, int64(len(data))) {
		return nil
	}
	return s.putBlob(h, int64(len(data)), bytes.NewReader(data))
}

// localImage is a v1.Image read from the content store, so unpacking never
// touches the network.
type localImage struct {
	s        *Store
	raw      []byte
	manifest *v1.Manifest
}

var _ partial.CompressedImageCore = (*localImage)(nil)

func (l *localImage) RawManifest() ([]byte, error) { return l.raw, nil }

func (l *localImage) MediaType() (types.MediaType, error) {
	if l.manifest.MediaType != "" {
		return l.manifest.MediaType, nil
	}
	return types.DockerManifestSchema2, nil
}

func (l *localImage) RawConfigFile() ([]byte, error) {
	return os.ReadFile(l.s.blobPath(l.manifest.Config.Digest))
}

func (l *localImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	if h == l.manifest.Config.Digest {
		return &localBlob{path: l.s.blobPath(h), desc: l.manifest.Config}, nil
	}
	for _, d := range l.manifest.Layers {
		if d.Digest == h {
			return &localBlob{path: l.s.blobPath(h), desc: d}, nil
		}
	}
	return nil, fmt.Errorf("blob %s is not part of this image", h)
}

// localBlob is one stored blob seen as a compressed layer.
type localBlob struct {
	path string
	desc v1.Descriptor
}

func (b *localBlob) Digest() (v1.Hash, error)            { return b.desc.Digest, nil }
func (b *localBlob) Size() (int64, error)                { return b.desc.Size, nil }
func (b *localBlob) MediaType() (types.MediaType, error) { return b.desc.MediaType, nil }
func (b *localBlob) Compressed() (io.ReadCloser, error)  { return os.Open(b.path) }

// errBadBlob marks a blob the registry sent short, long, corrupt or not at
// all: the registry's fault, not the node's.
var errBadBlob = errors.New("the registry sent a truncated or corrupt blob")

// readErrReader keeps the error its source returned, so that a failed
// copy can tell a registry that broke off from a disk that filled up.
type readErrReader struct {
	r   io.Reader
	err error
}

func (r *readErrReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}
