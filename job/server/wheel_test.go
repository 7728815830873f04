package server

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Timers fire in order, exactly once, not before their time and at the
// first advance at or after it — across all three levels and the overflow.
func TestWheelFiresInOrder(t *testing.T) {
	// The wheel starts mid-millisecond, as a server does.
	t0 := time.Unix(1_700_000_000, 437_000)
	w := newWheel(t0)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 2))
	defer func() {
		if t.Failed() {
			t.Logf("seed %d", seed)
		}
	}()
	want := map[int]time.Duration{}
	spans := []time.Duration{300 * time.Millisecond, 20 * time.Second, 30 * time.Minute, 3 * time.Hour}
	for i := range 5000 {
		d := time.Duration(rng.Int64N(int64(spans[i%len(spans)])))
		want[i] = d
		w.add(i, t0.Add(d), i)
	}
	// Cancel some, reschedule others.
	for i := 0; i < 5000; i += 7 {
		if !w.remove(i) {
			t.Fatalf("remove %d", i)
		}
		delete(want, i)
	}
	for i := 1; i < 5000; i += 11 {
		if _, ok := want[i]; !ok {
			continue
		}
		want[i] = time.Duration(i) * time.Millisecond
		w.add(i, t0.Add(want[i]), i)
	}
	if w.len() != len(want) {
		t.Fatalf("len %d, want %d", w.len(), len(want))
	}
	seen := map[int]bool{}
	now := t0
	var last time.Duration
	for w.len() > 0 {
		next, ok := w.nextDue()
		if !ok {
			t.Fatal("nextDue says empty")
		}
		if next.Before(now) {
			next = now
		}
		// Jump straight to the next due time, sometimes overshooting.
		now = next.Add(time.Duration(rng.IntN(3)) * time.Millisecond)
		for _, v := range w.advance(now) {
			i := v.(int)
			if seen[i] {
				t.Fatalf("timer %d fired twice", i)
			}
			seen[i] = true
			at := want[i]
			if now.Sub(t0) < at {
				t.Fatalf("timer %d fired at %v, before its time %v", i, now.Sub(t0), at)
			}
			if now.Sub(t0)-at > 3*time.Millisecond {
				t.Fatalf("timer %d fired at %v, late for %v", i, now.Sub(t0), at)
			}
			if at < last-3*time.Millisecond {
				t.Fatalf("timer %d (%v) fired after a later one (%v)", i, at, last)
			}
			last = max(last, at)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("fired %d of %d", len(seen), len(want))
	}
}

func TestWheelPastTimesFireAtOnce(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	w := newWheel(t0)
	w.advance(t0.Add(10 * time.Second))
	w.add("late", t0.Add(time.Second), "late")
	got := w.advance(t0.Add(10 * time.Second))
	if !slices.Equal(got, []any{"late"}) {
		t.Fatalf("got %v", got)
	}
}

// On the real clock, over 100,000 timers at arbitrary sub-millisecond
// times: none is handed over before its time (the rule for every fire),
// and lateness is measured from the exact time.
func TestWheelNeverEarlyOnTheClock(t *testing.T) {
	const n = 100_000
	span := 1500 * time.Millisecond
	if testing.Short() {
		span = 500 * time.Millisecond
	}
	start := time.Now()
	w := newWheel(start) // origin mid-millisecond, as in a server
	rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), 3))
	at := make([]time.Time, n)
	for i := range n {
		at[i] = start.Add(time.Duration(rng.Int64N(int64(span))))
		w.add(i, at[i], i)
	}
	stop := make(chan struct{})
	fired := make([]time.Time, n)
	count := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.run(stop, func(v any) bool {
			fired[v.(int)] = time.Now()
			count++
			return count < n
		})
	}()
	select {
	case <-done:
	case <-time.After(span + 10*time.Second):
		close(stop)
		<-done
		t.Fatalf("fired %d of %d", count, n)
	}
	early, minLate, maxLate := 0, time.Duration(1<<62), time.Duration(0)
	for i := range n {
		late := fired[i].Sub(at[i])
		if late < 0 {
			early++
		}
		minLate, maxLate = min(minLate, late), max(maxLate, late)
	}
	t.Logf("%d timers over %v: early %d, lateness min %v max %v", n, span, early, minLate, maxLate)
	if early > 0 {
		t.Fatalf("%d of %d timers fired before their time (min lateness %v)", early, n, minLate)
	}
}
