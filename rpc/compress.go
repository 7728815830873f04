package rpc

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"sync"
)

var gzipWriters = sync.Pool{New: func() any { w, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed); return w }}

// compress gzips b into a new slice.
func compress(b []byte) ([]byte, error) {
	var out bytes.Buffer
	out.Grow(len(b) / 2)
	w := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(w)
	w.Reset(&out)
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// decompress gunzips b, refusing output larger than limit (a gzip bomb).
func decompress(b []byte, limit int) ([]byte, error) {
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("compressed body: %w", err)
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("compressed body: %w", err)
	}
	if len(out) > limit {
		return nil, fmt.Errorf("compressed body inflates past the %d-byte frame limit", limit)
	}
	return out, nil
}
