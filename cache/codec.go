package cache

import (
	"encoding/json"
	"fmt"
)

// Codec turns values into the remote tier's bytes and back.
type Codec[V any] interface {
	Marshal(v V) ([]byte, error)
	Unmarshal(b []byte) (V, error)
}

// JSON is the default codec.
type JSON[V any] struct{}

// Marshal encodes v as JSON.
func (JSON[V]) Marshal(v V) ([]byte, error) { return json.Marshal(v) }

// Unmarshal decodes JSON into a V.
func (JSON[V]) Unmarshal(b []byte) (V, error) {
	var v V
	if err := json.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("cache: decode: %w", err)
	}
	return v, nil
}

// Bytes stores []byte values as they are.
type Bytes struct{}

// Marshal returns b.
func (Bytes) Marshal(b []byte) ([]byte, error) { return b, nil }

// Unmarshal returns a copy of b.
func (Bytes) Unmarshal(b []byte) ([]byte, error) { return append([]byte(nil), b...), nil }

// String stores string values as they are.
type String struct{}

// Marshal returns s's bytes.
func (String) Marshal(s string) ([]byte, error) { return []byte(s), nil }

// Unmarshal returns b as a string.
func (String) Unmarshal(b []byte) (string, error) { return string(b), nil }
