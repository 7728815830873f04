package balance

import (
	"fmt"
	"math"
	"testing"
	"time"
)

type ep struct {
	addr   string
	weight int
	zone   string
	out    int64
	lat    time.Duration
}

func (e *ep) Addr() string           { return e.addr }
func (e *ep) Weight() int            { return e.weight }
func (e *ep) Zone() string           { return e.zone }
func (e *ep) Outstanding() int64     { return e.out }
func (e *ep) Latency() time.Duration { return e.lat }

func eps(n int) []Endpoint {
	out := make([]Endpoint, n)
	for i := range out {
		out[i] = &ep{addr: fmt.Sprintf("10.0.0.%d:7071", i)}
	}
	return out
}

func count(p Picker, n int, info Info) map[string]int {
	m := map[string]int{}
	for range n {
		e, ok := p.Pick(info)
		if !ok {
			panic("no pick")
		}
		m[e.Addr()]++
	}
	return m
}

func TestRoundRobinEven(t *testing.T) {
	m := count(RoundRobin().Build(eps(4)), 4000, Info{})
	for a, n := range m {
		if n != 1000 {
			t.Fatalf("%s got %d of 4000", a, n)
		}
	}
}

func TestExcludeSkipsTried(t *testing.T) {
	all := eps(3)
	for _, b := range []Balancer{RoundRobin(), WeightedRandom(), P2C(), LeastRequest(), ConsistentHash(1.25)} {
		p := b.Build(all)
		info := Info{Key: "k", Exclude: func(e Endpoint) bool { return e != all[2] }}
		for range 50 {
			if e, ok := p.Pick(info); !ok || e != all[2] {
				t.Fatalf("%s picked %v %v", b.Name(), e, ok)
			}
		}
		if _, ok := p.Pick(Info{Exclude: func(Endpoint) bool { return true }}); ok {
			t.Fatalf("%s picked an excluded endpoint", b.Name())
		}
	}
}

func TestWeightedRandomProportional(t *testing.T) {
	all := eps(2)
	all[0].(*ep).weight, all[1].(*ep).weight = 100, 300
	m := count(WeightedRandom().Build(all), 40000, Info{})
	share := float64(m[all[1].Addr()]) / 40000
	if math.Abs(share-0.75) > 0.02 {
		t.Fatalf("weight 300 of 400 got share %.3f", share)
	}
}

func TestP2CAvoidsSlowAndBusy(t *testing.T) {
	all := eps(3)
	all[0].(*ep).lat = 50 * time.Millisecond // slow
	all[1].(*ep).lat, all[2].(*ep).lat = time.Millisecond, time.Millisecond
	all[2].(*ep).out = 40 // busy
	m := count(P2C().Build(all), 9000, Info{})
	// Pairs {0,1} and {1,2} go to 1; {0,2} to 2 (cost 41 ms < 50 ms); 0 never wins.
	if m[all[1].Addr()] < 5500 || m[all[0].Addr()] > 500 {
		t.Fatalf("distribution %v", m)
	}
}

func TestLeastRequest(t *testing.T) {
	all := eps(3)
	all[0].(*ep).out, all[1].(*ep).out, all[2].(*ep).out = 5, 1, 3
	if e, _ := LeastRequest().Build(all).Pick(Info{}); e != all[1] {
		t.Fatalf("picked %s", e.Addr())
	}
}

func TestConsistentHashStableAndMinimalMoves(t *testing.T) {
	all := eps(5)
	p := ConsistentHash(1.25).Build(all)
	before := map[string]string{}
	for i := range 2000 {
		k := fmt.Sprintf("user-%d", i)
		e1, _ := p.Pick(Info{Key: k})
		e2, _ := p.Pick(Info{Key: k})
		if e1 != e2 {
			t.Fatal("same key, different endpoints")
		}
		before[k] = e1.Addr()
	}
	// Drop one endpoint: only its keys move.
	p2 := ConsistentHash(1.25).Build(all[:4])
	moved := 0
	for k, a := range before {
		e, _ := p2.Pick(Info{Key: k})
		if e.Addr() != a {
			moved++
			if a != all[4].Addr() {
				t.Fatalf("key %s moved from a surviving endpoint", k)
			}
		}
	}
	if moved < 200 || moved > 650 {
		t.Fatalf("%d of 2000 keys moved; want about 400", moved)
	}
}

func TestConsistentHashBoundedLoad(t *testing.T) {
	all := eps(4)
	p := ConsistentHash(1.25).Build(all)
	hot, _ := p.Pick(Info{Key: "hot"})
	hot.(*ep).out = 100 // the hot key's home is overloaded
	e, _ := p.Pick(Info{Key: "hot"})
	if e == hot {
		t.Fatal("bounded load did not divert from an overloaded endpoint")
	}
}

func TestZonePreference(t *testing.T) {
	all := eps(4)
	all[0].(*ep).zone, all[1].(*ep).zone = "az1", "az1"
	all[2].(*ep).zone, all[3].(*ep).zone = "az2", "az2"
	p := Zone("az2", RoundRobin()).Build(all)
	m := count(p, 100, Info{})
	if m[all[2].Addr()]+m[all[3].Addr()] != 100 {
		t.Fatalf("calls left the local zone: %v", m)
	}
	// Local zone all tried: falls back to the others.
	e, ok := p.Pick(Info{Exclude: func(e Endpoint) bool { return e.Zone() == "az2" }})
	if !ok || e.Zone() != "az1" {
		t.Fatalf("no fallback: %v", e)
	}
	// No local endpoints at all: everything is used.
	m = count(Zone("az9", RoundRobin()).Build(all), 400, Info{})
	if len(m) != 4 {
		t.Fatalf("%v", m)
	}
}
