// Package sealed encrypts the cluster's secrets with a key every member
// derives for itself, so values sit in the raft log and snapshots only as
// ciphertext, and the key never travels in the log.
//
// The key is HKDF-SHA256 of the cluster's gossip key (which every member
// got, over the join's TLS, when it joined, and keeps in its data dir
// beside its certificate), with its own label, so the two keys are
// independent. A value is sealed with AES-256-GCM under a fresh random
// nonce, with the secret's name as additional data: a sealed value moved
// to another name does not open.
package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"
)

// Info is what anyone may see of a secret: its name and when it was last
// set, never its value.
type Info struct {
	Name      string    `json:"name"`
	UpdatedAt time.Time `json:"updated_at"`
}

// label separates this key from any other derived from the gossip key.
const label = "hypercore sealed secrets v1"

// version is the first byte of every sealed value, so the scheme can
// change without misreading old values.
const version byte = 1

// Box seals and opens secret values. It is safe for concurrent use.
type Box struct {
	aead cipher.AEAD
}

// New derives the cluster's secrets key from the cluster key material
// (the gossip key) and returns a Box using it.
func New(clusterKey []byte) (*Box, error) {
	if len(clusterKey) < 16 {
		return nil, errors.New("sealed: cluster key is too short")
	}
	key, err := hkdf.Key(sha256.New, clusterKey, nil, label, 32)
	if err != nil {
		return nil, fmt.Errorf("sealed: derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts value for the secret called name.
func (b *Box) Seal(name string, value []byte) []byte {
	nonce := make([]byte, b.aead.NonceSize())
	rand.Read(nonce)
	out := append([]byte{version}, nonce...)
	return b.aead.Seal(out, nonce, value, []byte(name))
}

// Open decrypts what Seal made for name. It fails on a value sealed for
// another name, by another cluster, or changed in any way.
func (b *Box) Open(name string, sealed []byte) ([]byte, error) {
	n := b.aead.NonceSize()
	if len(sealed) < 1+n+b.aead.Overhead() || sealed[0] != version {
		return nil, fmt.Errorf("sealed: secret %s: not a sealed value of this version", name)
	}
	v, err := b.aead.Open(nil, sealed[1:1+n], sealed[1+n:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("sealed: secret %s does not open with this cluster's key (sealed by another cluster, or changed)", name)
	}
	return v, nil
}
