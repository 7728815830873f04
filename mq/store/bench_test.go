package store

import (
	"testing"
	"time"
)

func benchPut(b *testing.B, flush string, size int) {
	s, err := Open(Config{Dir: b.TempDir(), SegmentSize: 64 << 20, Flush: flush, FlushInterval: 100 * time.Millisecond, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.Put(&Message{Topic: "bench", Body: body}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPutAsync appends 1 KiB messages with the async flusher.
func BenchmarkPutAsync(b *testing.B) { benchPut(b, FlushAsync, 1024) }

// BenchmarkPutSync appends 1 KiB messages with group commit (each Put
// waits for its fsync; concurrent Puts share one).
func BenchmarkPutSync(b *testing.B) { benchPut(b, FlushSync, 1024) }
