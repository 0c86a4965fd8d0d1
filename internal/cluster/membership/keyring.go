package membership

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hashicorp/memberlist"
	"github.com/hypercore-dev/hypercore/internal/atomicfile"
)

// GossipKeySize is the length of a gossip key: 32 bytes selects AES-256.
const GossipKeySize = 32

// loadKeyring builds the keyring memberlist encrypts with. The configured
// key is always the primary, the one that encrypts, so the operator's
// configuration is the truth; other keys found in the keyring file are kept
// for decryption only, so that a key rotation started with serf's key
// manager keeps working across a restart. The file is (re)written in serf's
// own format (a JSON list of base64 keys, mode 0600) so serf can keep
// persisting key changes to it.
func loadKeyring(primary []byte, file string) (*memberlist.Keyring, error) {
	if len(primary) != GossipKeySize {
		return nil, fmt.Errorf("membership: gossip key is %d bytes: gossip is always encrypted and needs a %d-byte key (e.g. from `head -c32 /dev/urandom | base64`)", len(primary), GossipKeySize)
	}
	var others [][]byte
	if file != "" {
		keys, err := readKeyringFile(file)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if !bytes.Equal(k, primary) {
				others = append(others, k)
			}
		}
	}
	kr, err := memberlist.NewKeyring(others, primary)
	if err != nil {
		return nil, fmt.Errorf("membership: build gossip keyring: %w", err)
	}
	if file != "" {
		if err := writeKeyringFile(file, kr.GetKeys()); err != nil {
			return nil, err
		}
	}
	return kr, nil
}

func readKeyringFile(file string) ([][]byte, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("membership: read gossip keyring: %w", err)
	}
	var encoded []string
	if err := json.Unmarshal(data, &encoded); err != nil {
		return nil, fmt.Errorf("membership: gossip keyring %s is not a JSON list of keys: %w; remove it to rebuild it from the gossip key", file, err)
	}
	keys := make([][]byte, 0, len(encoded))
	for i, e := range encoded {
		k, err := base64.StdEncoding.DecodeString(e)
		if err == nil {
			err = memberlist.ValidateKey(k)
		}
		if err != nil {
			return nil, fmt.Errorf("membership: gossip keyring %s, key %d: %w; remove it to rebuild it from the gossip key", file, i, err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// writeKeyringFile replaces the file atomically so that a crash mid-write
// cannot leave a node unable to start.
func writeKeyringFile(file string, keys [][]byte) error {
	encoded := make([]string, len(keys))
	for i, k := range keys {
		encoded[i] = base64.StdEncoding.EncodeToString(k)
	}
	data, err := json.MarshalIndent(encoded, "", "  ")
	if err != nil {
		return fmt.Errorf("membership: encode gossip keyring: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("membership: gossip keyring directory: %w", err)
	}
	// 0600: this is key material.
	if err := atomicfile.WriteFile(file, data, 0o600); err != nil {
		return fmt.Errorf("membership: write gossip keyring: %w", err)
	}
	return nil
}
