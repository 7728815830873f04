// Package balance holds the client-side load balancers of Tangram RPC.
//
// A Balancer builds a Picker over the endpoints that are currently healthy;
// the client rebuilds the picker when that set changes, and calls Pick on
// every call. Pickers are safe for concurrent use and never block.
package balance

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"sync/atomic"
	"time"
)

// Endpoint is what a picker knows about a server. The client's endpoints
// implement it; Outstanding and Latency change as calls run.
type Endpoint interface {
	Addr() string
	// Weight is the endpoint's share, 1–10000 (100 when not configured).
	Weight() int
	Zone() string
	// Outstanding is the number of calls in flight to the endpoint.
	Outstanding() int64
	// Latency is an exponentially weighted moving average of recent call
	// latencies; 0 when nothing was measured yet.
	Latency() time.Duration
}

// Info is what a picker knows about the call.
type Info struct {
	// Key is the call's hash key (consistent hashing); empty if none.
	Key string
	// Exclude reports endpoints a retry must avoid; nil on first attempts.
	Exclude func(Endpoint) bool
}

// Picker chooses an endpoint for one call; ok is false when none is left.
type Picker interface {
	Pick(info Info) (ep Endpoint, ok bool)
}

// Balancer builds pickers. eps is never empty.
type Balancer interface {
	Name() string
	Build(eps []Endpoint) Picker
}

// ByName returns a balancer by its name: round_robin, weighted_random,
// p2c, least_request, consistent_hash.
func ByName(name string) (Balancer, bool) {
	switch name {
	case "round_robin", "":
		return RoundRobin(), true
	case "weighted_random":
		return WeightedRandom(), true
	case "p2c":
		return P2C(), true
	case "least_request":
		return LeastRequest(), true
	case "consistent_hash":
		return ConsistentHash(1.25), true
	}
	return nil, false
}

func allowed(info Info, ep Endpoint) bool { return info.Exclude == nil || !info.Exclude(ep) }

// RoundRobin picks endpoints in turn.
func RoundRobin() Balancer { return rrBalancer{} }

type rrBalancer struct{}

func (rrBalancer) Name() string { return "round_robin" }
func (rrBalancer) Build(eps []Endpoint) Picker {
	p := &rrPicker{eps: eps}
	p.next.Store(rand.Uint64N(uint64(len(eps)))) // spread many clients' first picks
	return p
}

type rrPicker struct {
	eps  []Endpoint
	next atomic.Uint64
}

func (p *rrPicker) Pick(info Info) (Endpoint, bool) {
	n := uint64(len(p.eps))
	start := p.next.Add(1)
	for i := uint64(0); i < n; i++ {
		ep := p.eps[(start+i)%n]
		if allowed(info, ep) {
			return ep, true
		}
	}
	return nil, false
}

// WeightedRandom picks an endpoint at random in proportion to its weight.
func WeightedRandom() Balancer { return wrBalancer{} }

type wrBalancer struct{}

func (wrBalancer) Name() string { return "weighted_random" }
func (wrBalancer) Build(eps []Endpoint) Picker {
	p := &wrPicker{eps: eps, cum: make([]int, len(eps))}
	total := 0
	for i, ep := range eps {
		total += weight(ep)
		p.cum[i] = total
	}
	return p
}

func weight(ep Endpoint) int {
	w := ep.Weight()
	if w <= 0 {
		return 100
	}
	return min(w, 10000)
}

type wrPicker struct {
	eps []Endpoint
	cum []int
}

func (p *wrPicker) Pick(info Info) (Endpoint, bool) {
	if info.Exclude == nil {
		r := rand.IntN(p.cum[len(p.cum)-1])
		i := sort.SearchInts(p.cum, r+1)
		return p.eps[i], true
	}
	var left []Endpoint
	for _, ep := range p.eps {
		if allowed(info, ep) {
			left = append(left, ep)
		}
	}
	if len(left) == 0 {
		return nil, false
	}
	return wrBalancer{}.Build(left).Pick(Info{})
}

// P2C is the power of two choices: two endpoints drawn at random (weighted),
// the one with the lower cost wins, where cost is the EWMA latency times the
// calls in flight plus one (Finagle's "peak EWMA" and least-outstanding in
// one). A slow or overloaded server gets fewer calls within a few requests.
func P2C() Balancer { return p2cBalancer{} }

type p2cBalancer struct{}

func (p2cBalancer) Name() string { return "p2c" }
func (p2cBalancer) Build(eps []Endpoint) Picker {
	return &p2cPicker{wr: wrBalancer{}.Build(eps).(*wrPicker)}
}

type p2cPicker struct{ wr *wrPicker }

func cost(ep Endpoint) float64 {
	lat := float64(ep.Latency())
	if lat <= 0 {
		return 0 // never measured: try it, so it gets a measurement
	}
	return lat * float64(ep.Outstanding()+1) / float64(weight(ep))
}

func (p *p2cPicker) Pick(info Info) (Endpoint, bool) {
	a, ok := p.wr.Pick(info)
	if !ok {
		return nil, false
	}
	if len(p.wr.eps) == 1 {
		return a, true
	}
	var b Endpoint
	for range 3 { // a distinct second choice, most of the time
		if b, ok = p.wr.Pick(info); ok && b != a {
			break
		}
	}
	if b == nil || b == a {
		return a, true
	}
	if cost(b) < cost(a) {
		return b, true
	}
	return a, true
}

// LeastRequest scans all endpoints and picks the one with the fewest calls in
// flight per unit of weight (ties broken at random).
func LeastRequest() Balancer { return lrBalancer{} }

type lrBalancer struct{}

func (lrBalancer) Name() string { return "least_request" }
func (lrBalancer) Build(eps []Endpoint) Picker {
	return &lrPicker{eps: eps}
}

type lrPicker struct{ eps []Endpoint }

func (p *lrPicker) Pick(info Info) (Endpoint, bool) {
	var best Endpoint
	bestLoad := math.Inf(1)
	off := rand.IntN(len(p.eps))
	for i := range p.eps {
		ep := p.eps[(off+i)%len(p.eps)]
		if !allowed(info, ep) {
			continue
		}
		if l := float64(ep.Outstanding()+1) / float64(weight(ep)); l < bestLoad {
			best, bestLoad = ep, l
		}
	}
	return best, best != nil
}

// ConsistentHash maps a call's key onto a hash ring (160 points per weight
// unit of 100) so the same key reaches the same endpoint while the set is
// unchanged, and moves only about 1/n of keys when one endpoint joins or
// leaves. Bounded loads (Mirrokni, Thorup, Zadimoghaddam): an endpoint with
// more than loadFactor × the average calls in flight is passed over for the
// next one on the ring, so one hot key cannot pile everything on one server.
// Calls without a key are spread round robin.
func ConsistentHash(loadFactor float64) Balancer {
	if loadFactor < 1 {
		loadFactor = 1.25
	}
	return chBalancer{c: loadFactor}
}

type chBalancer struct{ c float64 }

func (chBalancer) Name() string { return "consistent_hash" }

type ringPoint struct {
	h  uint64
	ep int
}

func (b chBalancer) Build(eps []Endpoint) Picker {
	p := &chPicker{eps: eps, c: b.c, rr: rrBalancer{}.Build(eps)}
	for i, ep := range eps {
		n := max(160*weight(ep)/100, 8)
		for v := range n {
			p.ring = append(p.ring, ringPoint{h: hashKey(ep.Addr() + "#" + strconv.Itoa(v)), ep: i})
		}
	}
	slices.SortFunc(p.ring, func(a, b ringPoint) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return a.ep - b.ep
	})
	return p
}

func hashKey(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	x := h.Sum64()
	// fnv's low bits mix poorly for short keys; finish with a splitmix step.
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

type chPicker struct {
	eps  []Endpoint
	ring []ringPoint
	c    float64
	rr   Picker
}

func (p *chPicker) Pick(info Info) (Endpoint, bool) {
	if info.Key == "" {
		return p.rr.Pick(info)
	}
	var total int64
	for _, ep := range p.eps {
		total += ep.Outstanding()
	}
	limit := int64(math.Ceil(p.c * float64(total+1) / float64(len(p.eps))))
	h := hashKey(info.Key)
	i := sort.Search(len(p.ring), func(i int) bool { return p.ring[i].h >= h })
	var fallback Endpoint
	seen := 0
	for j := 0; j < len(p.ring) && seen < len(p.eps)*4; j++ {
		ep := p.eps[p.ring[(i+j)%len(p.ring)].ep]
		if !allowed(info, ep) {
			continue
		}
		if fallback == nil {
			fallback = ep
		}
		if ep.Outstanding() < limit {
			return ep, true
		}
		seen++
	}
	return fallback, fallback != nil
}

// Zone prefers endpoints in the local zone: calls go to the endpoints of
// zone local, balanced by inner, while any is available; to all endpoints
// otherwise (or when local is empty).
func Zone(local string, inner Balancer) Balancer { return zoneBalancer{local: local, inner: inner} }

type zoneBalancer struct {
	local string
	inner Balancer
}

func (b zoneBalancer) Name() string { return "zone(" + b.local + ")+" + b.inner.Name() }

func (b zoneBalancer) Build(eps []Endpoint) Picker {
	all := b.inner.Build(eps)
	var near []Endpoint
	for _, ep := range eps {
		if b.local != "" && ep.Zone() == b.local {
			near = append(near, ep)
		}
	}
	if len(near) == 0 || len(near) == len(eps) {
		return all
	}
	return &zonePicker{near: b.inner.Build(near), all: all}
}

type zonePicker struct{ near, all Picker }

func (p *zonePicker) Pick(info Info) (Endpoint, bool) {
	if ep, ok := p.near.Pick(info); ok {
		return ep, true
	}
	return p.all.Pick(info)
}
