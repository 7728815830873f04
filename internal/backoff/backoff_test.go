package backoff

import (
	"testing"
	"time"
)

func TestDelaysDoubleWithinJitterAndCap(t *testing.T) {
	b := New(100*time.Millisecond, 800*time.Millisecond)
	for i, want := range []time.Duration{100, 200, 400, 800, 800, 800} {
		want *= time.Millisecond
		if b.Current() != want {
			t.Fatalf("step %d: current %v, want %v", i, b.Current(), want)
		}
		d := b.Next()
		if d < want/2 || d > want {
			t.Fatalf("step %d: delay %v outside [%v, %v]", i, d, want/2, want)
		}
	}
	b.Reset()
	if b.Current() != 100*time.Millisecond {
		t.Fatalf("after reset: %v", b.Current())
	}
}

func TestJitterSpreads(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		b := New(time.Second, time.Second)
		seen[b.Next()] = true
	}
	if len(seen) < 10 {
		t.Fatalf("50 first delays took only %d values: no jitter", len(seen))
	}
}

func TestSleepStopsWhenDone(t *testing.T) {
	b := New(time.Hour, time.Hour)
	done := make(chan struct{})
	close(done)
	if b.Sleep(done) {
		t.Fatal("Sleep waited out an hour instead of stopping")
	}
	if !New(time.Millisecond, time.Millisecond).Sleep(make(chan struct{})) {
		t.Fatal("Sleep reported a stop")
	}
}

func TestBadBounds(t *testing.T) {
	b := New(0, 0)
	if d := b.Next(); d < 0 || d > time.Millisecond {
		t.Fatalf("zero bounds: %v", d)
	}
}
