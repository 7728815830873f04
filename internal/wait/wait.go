// Package wait is the one way tests wait for something that happens on
// another goroutine or in another process: poll a condition until it holds
// or a deadline passes, then fail the test naming what never happened.
//
// Tests synchronise on events (channels, Ready, the condition itself), never
// on a fixed sleep: a sleep is either too short on a busy machine (a flake)
// or too long everywhere else (a slow suite). Negative cases ("nothing
// fires") are asserted against an explicit clock or an event that proves the
// thing would have happened by then, not by sleeping and counting.
package wait

import (
	"testing"
	"time"
)

// For polls cond until it returns true, failing t with "timed out after d
// waiting for what" if it has not by then. It polls often at first (1 ms)
// and backs off to every 20 ms, so a condition that holds soon is seen soon
// and a long wait does not spin.
func For(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Until(d, cond) {
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
}

// Until polls cond until it returns true (reporting true) or d passes
// (reporting false, after one last look). It is For without a test, for
// helpers that decide themselves what a timeout means.
func Until(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	pause := time.Millisecond
	for !cond() {
		left := time.Until(deadline)
		if left <= 0 {
			return cond()
		}
		timer := time.NewTimer(min(pause, left))
		<-timer.C
		pause = min(2*pause, 20*time.Millisecond)
	}
	return true
}

// Receive waits up to d for a value on ch, failing t naming what if none
// arrives or ch is closed.
func Receive[T any](t testing.TB, d time.Duration, what string, ch <-chan T) T {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case v, ok := <-ch:
		if !ok {
			t.Fatalf("%s: channel closed", what)
		}
		return v
	case <-timer.C:
		t.Fatalf("timed out after %v waiting for %s", d, what)
	}
	var zero T
	return zero
}
