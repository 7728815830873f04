package cache

import (
	"sync/atomic"
	"testing"
)

// The front's rules: an entry is served only for its key, before its
// expiry and while the local tier holds it (not dead); a voided (stale)
// fill or a dead entry is never promoted.
func TestFrontRules(t *testing.T) {
	f := newFront[string]()
	e := &entry[string]{v: "one", key: "k", exp: 100}
	f.promote("k", e)
	if got, ok := f.get("k", 99); !ok || got.v != "one" {
		t.Fatalf("a promoted entry before its expiry: %v %v", got, ok)
	}
	if _, ok := f.get("k", 100); ok {
		t.Fatal("served at its expiry")
	}
	if _, ok := f.get("other", 0); ok {
		t.Fatal("served for another key")
	}
	atomic.StoreUint32(&e.dead, 1) // the local tier replaced or dropped it
	if _, ok := f.get("k", 0); ok {
		t.Fatal("served after the local tier dropped it")
	}
	f.promote("k", &entry[string]{v: "stale", key: "k", exp: 100, stale: true})
	f.promote("k", &entry[string]{v: "dead", key: "k", exp: 100, dead: 1})
	if got, ok := f.get("k", 0); ok {
		t.Fatalf("served %q: a voided fill or a dead entry was promoted", got.v)
	}
}
