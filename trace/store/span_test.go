package store

import (
	"reflect"
	"testing"
	"time"
)

// FuzzDecodeSpan: any bytes decode to a span or an error, never a panic
// or a huge allocation; what decodes re-encodes to what decodes the same.
func FuzzDecodeSpan(f *testing.F) {
	start := time.Unix(1_700_000_000, 0)
	for n := range 3 {
		for j := range 5 {
			s := span(n, j, start)
			f.Add(appendSpan(nil, &s))
		}
	}
	f.Add([]byte{})
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSpan(b)
		if err != nil {
			return
		}
		again, err := decodeSpan(appendSpan(nil, &s))
		if err != nil {
			t.Fatalf("a decoded span does not decode after encoding: %v", err)
		}
		if !reflect.DeepEqual(again, s) {
			t.Fatalf("round trip differs:\n%+v\n%+v", s, again)
		}
	})
}

func TestSpanRoundTrip(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	for j := range 5 {
		s := span(5, j, start)
		got, err := decodeSpan(appendSpan(nil, &s))
		if err != nil || !reflect.DeepEqual(got, s) {
			t.Fatalf("span %d: %v\n got %+v\nwant %+v", j, err, got, s)
		}
		b := appendSpan(nil, &s)
		for cut := range len(b) {
			if _, err := decodeSpan(b[:cut]); err == nil {
				t.Fatalf("span %d cut at %d of %d decoded", j, cut, len(b))
			}
		}
		if _, err := decodeSpan(append(b, 0)); err == nil {
			t.Fatalf("span %d with a byte after it decoded", j)
		}
	}
}
