// Package backoff is Tangram's one retry-delay policy: delays that double
// from Min to Max, with equal jitter (each delay is drawn from [d/2, d]) so
// that many clients retrying after the same failure do not return in step,
// and a Reset after success.
//
// A loop that retries looks like:
//
//	b := backoff.New(100*time.Millisecond, 5*time.Second)
//	for {
//		if err := try(); err == nil {
//			b.Reset()
//			continue
//		}
//		if !b.Sleep(ctx.Done()) {
//			return // stopped
//		}
//	}
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff hands out growing delays. It is not safe for concurrent use; each
// retry loop owns one.
type Backoff struct {
	min, max time.Duration
	cur      time.Duration
}

// New returns a Backoff whose first delay is about min and whose delays
// stop growing at max.
func New(min, max time.Duration) *Backoff {
	min = max1(min, time.Millisecond)
	return &Backoff{min: min, max: max1(max, min), cur: min}
}

func max1(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

// Next returns the delay to wait now, jittered into [d/2, d], and doubles
// the next one up to the maximum.
func (b *Backoff) Next() time.Duration {
	d := b.cur
	b.cur = min(b.cur*2, b.max)
	return d/2 + rand.N(d/2+1)
}

// Current returns the un-jittered delay Next will draw from, for logs.
func (b *Backoff) Current() time.Duration { return b.cur }

// Reset starts again from the minimum (after a success).
func (b *Backoff) Reset() { b.cur = b.min }

// Sleep waits for the next delay; it returns false at once when done is
// closed (the loop should stop).
func (b *Backoff) Sleep(done <-chan struct{}) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		return true
	}
}
