package image

import (
	"encoding/json"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	bolt "go.etcd.io/bbolt"
)

// The index is a bbolt file because every change to it is one transaction:
// a crash leaves either the old entry or the new one, never half of either.
var (
	refsBucket   = []byte("refs")   // canonical ref → manifest digest
	imagesBucket = []byte("images") // manifest digest → record
)

// record is what the index knows about one unpacked image. It is written
// only after the image's blobs and rootfs are complete on disk.
type record struct {
	Digest string    `json:"digest"`
	Config v1.Config `json:"config"`
	// Blobs are the digests of the manifest, config and layers, so GC knows
	// which content this image keeps alive.
	Blobs  []string  `json:"blobs"`
	Size   int64     `json:"size"`
	Pulled time.Time `json:"pulled"`
}

type index struct{ db *bolt.DB }

func openIndex(path string) (*index, error) {
	// A short timeout turns a second process holding the lock into an error
	// instead of a silent hang.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open image index %s (is another hypercore process using this image directory?): %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{refsBucket, imagesBucket} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("initialise image index %s: %w", path, err)
	}
	return &index{db: db}, nil
}

func (ix *index) close() error { return ix.db.Close() }

// put records rec and points refKey at it in one transaction.
func (ix *index) put(refKey string, rec record) error {
	val, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return ix.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(imagesBucket).Put([]byte(rec.Digest), val); err != nil {
			return err
		}
		return tx.Bucket(refsBucket).Put([]byte(refKey), []byte(rec.Digest))
	})
}

// resolve returns the digest refKey points at, or "" if none.
func (ix *index) resolve(refKey string) (string, error) {
	var digest string
	err := ix.db.View(func(tx *bolt.Tx) error {
		digest = string(tx.Bucket(refsBucket).Get([]byte(refKey)))
		return nil
	})
	return digest, err
}

// image returns the record of digest; ok is false if there is none.
func (ix *index) image(digest string) (rec record, ok bool, err error) {
	err = ix.db.View(func(tx *bolt.Tx) error {
		val := tx.Bucket(imagesBucket).Get([]byte(digest))
		if val == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(val, &rec)
	})
	return rec, ok, err
}

// all returns every record by digest and every ref with its digest.
func (ix *index) all() (map[string]record, map[string]string, error) {
	recs, refs := map[string]record{}, map[string]string{}
	err := ix.db.View(func(tx *bolt.Tx) error {
		err := tx.Bucket(imagesBucket).ForEach(func(k, v []byte) error {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("image %s: %w", k, err)
			}
			recs[string(k)] = rec
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(refsBucket).ForEach(func(k, v []byte) error {
			refs[string(k)] = string(v)
			return nil
		})
	})
	return recs, refs, err
}

// removeRef drops refKey; if no other ref then points at its image, the
// image record goes too, so a removed tag does not pin its content.
func (ix *index) removeRef(refKey string) error {
	return ix.db.Update(func(tx *bolt.Tx) error {
		refs := tx.Bucket(refsBucket)
		digest := refs.Get([]byte(refKey))
		if digest == nil {
			return ErrNotFound
		}
		digest = append([]byte(nil), digest...)
		if err := refs.Delete([]byte(refKey)); err != nil {
			return err
		}
		c := refs.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if string(v) == string(digest) {
				return nil
			}
		}
		return tx.Bucket(imagesBucket).Delete(digest)
	})
}

// removeImages drops the records of the given digests and every ref that
// points at one of them. It reports ErrNotFound if none of them existed.
func (ix *index) removeImages(digests map[string]bool) error {
	return ix.db.Update(func(tx *bolt.Tx) error {
		images, refs := tx.Bucket(imagesBucket), tx.Bucket(refsBucket)
		found := false
		for d := range digests {
			if images.Get([]byte(d)) != nil {
				found = true
			}
			if err := images.Delete([]byte(d)); err != nil {
				return err
			}
		}
		var drop [][]byte
		err := refs.ForEach(func(k, v []byte) error {
			if digests[string(v)] {
				drop = append(drop, append([]byte(nil), k...))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range drop {
			if err := refs.Delete(k); err != nil {
				return err
			}
		}
		if !found && len(drop) == 0 {
			return ErrNotFound
		}
		return nil
	})
}
