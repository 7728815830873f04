package server

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/tangram-dev/tangram/internal/durable"
)

// Cipher encrypts secret values with AES-256-GCM.
type Cipher struct {
	aead        cipher.AEAD
	fingerprint string
}

const encPrefix = "tgmenc:v1:"

// NewCipher builds a Cipher from a 32-byte key.
func NewCipher(key []byte) (*Cipher, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("config: secret key must be 32 bytes, got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("tangram config secret key v1\x00"), key...))
	return &Cipher{aead: aead, fingerprint: hex.EncodeToString(sum[:])}, nil
}

// LoadOrCreateKey reads a key file holding 32 bytes as 64 hex characters
// (or base64); when the file does not exist and create is set, it writes a
// new random key with mode 0600.
func LoadOrCreateKey(path string, create bool) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		// Durable before first use: a key lost to a power cut would leave
		// every secret stored under it unreadable.
		if err := durable.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("config: write secret key %s: %w", path, err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: read secret key: %w", err)
	}
	return ParseKey(strings.TrimSpace(string(b)))
}

// ParseKey decodes a 32-byte key given as hex or base64.
func ParseKey(s string) ([]byte, error) {
	if k, err := hex.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	return nil, errors.New("config: secret key must be 32 bytes as 64 hex characters or base64")
}

// Fingerprint identifies the key without revealing it (SHA-256 of a
// domain-separated copy of the 256-bit key).
func (c *Cipher) Fingerprint() string { return c.fingerprint }

// Seal encrypts a value.
func (c *Cipher) Seal(plain string) string {
	nonce := make([]byte, c.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := c.aead.Seal(nonce, nonce, []byte(plain), nil)
	return encPrefix + base64.RawStdEncoding.EncodeToString(out)
}

// Open decrypts a value sealed by Seal.
func (c *Cipher) Open(sealed string) (string, error) {
	if !strings.HasPrefix(sealed, encPrefix) {
		return "", errors.New("config: secret value is not sealed")
	}
	raw, err := base64.RawStdEncoding.DecodeString(sealed[len(encPrefix):])
	if err != nil || len(raw) < c.aead.NonceSize() {
		return "", errors.New("config: secret value is corrupt")
	}
	n := c.aead.NonceSize()
	plain, err := c.aead.Open(nil, raw[:n], raw[n:], nil)
	if err != nil {
		return "", errors.New("config: secret value does not decrypt with this key (was --secret-key-file changed?)")
	}
	return string(plain), nil
}
