package idgen_test

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/idgen"
)

// Every layout round-trips any field values through Compose and Decode.
func TestLayoutsRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, l := range idgen.Layouts() {
		if err := l.Validate(); err != nil {
			t.Fatal(err)
		}
		for range 10000 {
			vals := map[string]int64{}
			for _, f := range l.Fields {
				vals[f.Name] = r.Int64N(1 << f.Bits)
			}
			id, err := l.Compose(vals)
			if err != nil {
				t.Fatal(err)
			}
			if id < 0 {
				t.Fatalf("%s: negative id %d", l.Name, id)
			}
			d, err := l.Decode(id)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range l.Fields {
				if v, _ := d.Get(f.Name); v != vals[f.Name] {
					t.Fatalf("%s: %s = %d decoded as %d", l.Name, f.Name, vals[f.Name], v)
				}
				if v, _ := l.Field(id, f.Name); v != vals[f.Name] {
					t.Fatalf("%s: Field(%s) = %d, want %d", l.Name, f.Name, v, vals[f.Name])
				}
			}
			if want := l.Epoch.Add(time.Duration(vals[idgen.FieldTime]) * l.Unit); !d.Time.Equal(want) {
				t.Fatalf("%s: time %v, want %v", l.Name, d.Time, want)
			}
		}
	}
}

func TestLayoutValidation(t *testing.T) {
	bad := []idgen.Layout{
		{Name: "short", Unit: time.Millisecond, Fields: []idgen.Field{{"time", 41}, {"seq", 12}}},
		{Name: "noseq", Unit: time.Millisecond, Fields: []idgen.Field{{"time", 41}, {"worker", 22}}},
		{Name: "dup", Unit: time.Millisecond, Fields: []idgen.Field{{"time", 41}, {"seq", 11}, {"seq", 11}}},
		{Name: "zero", Unit: time.Millisecond, Fields: []idgen.Field{{"time", 63}, {"seq", 0}}},
		{Name: "unit", Fields: []idgen.Field{{"time", 41}, {"seq", 22}}},
	}
	for _, l := range bad {
		if err := l.Validate(); !errors.Is(err, idgen.ErrLayout) {
			t.Errorf("%s: %v, want ErrLayout", l.Name, err)
		}
	}
	if _, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Twitter(), Fixed: map[string]int64{"worker": 1}}); !errors.Is(err, idgen.ErrField) {
		t.Errorf("missing datacenter: %v", err)
	}
	if _, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Twitter(), Fixed: map[string]int64{"worker": 32, "datacenter": 0}}); !errors.Is(err, idgen.ErrField) {
		t.Errorf("worker 32 in 5 bits: %v", err)
	}
	if _, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Twitter(), Fixed: map[string]int64{"worker": 1, "datacenter": 0, "rack": 1}}); !errors.Is(err, idgen.ErrField) {
		t.Errorf("unknown fixed field: %v", err)
	}
}

// Many goroutines: every ID distinct and, per goroutine, increasing; the
// seed layout carries the per-ID fields.
func TestSnowflakeUniqueUnderConcurrency(t *testing.T) {
	g, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Seed(), Fixed: map[string]int64{"machine": 5}, PerID: []string{"type", "db", "table"}})
	if err != nil {
		t.Fatal(err)
	}
	const n, each = 8, 50000
	ids := make([][]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				id, err := g.NextFor(int64(j%8), int64(j%4), int64(j%16))
				if err != nil {
					t.Error(err)
					return
				}
				if len(ids[i]) > 0 && id>>17 < ids[i][len(ids[i])-1]>>17 {
					t.Errorf("time and sequence went back: %d after %d", id, ids[i][len(ids[i])-1])
					return
				}
				ids[i] = append(ids[i], id)
			}
		}()
	}
	wg.Wait()
	all := slices.Concat(ids...)
	slices.Sort(all)
	for i := 1; i < len(all); i++ {
		if all[i] == all[i-1] {
			t.Fatalf("duplicate id %d", all[i])
		}
	}
	d, _ := idgen.Seed().Decode(ids[0][3])
	if m, _ := d.Get("machine"); m != 5 {
		t.Fatalf("machine %d", m)
	}
	if db, _ := d.Get("db"); db != 3 {
		t.Fatalf("db %d, want 3", db)
	}
	if tb, _ := d.Get("table"); tb != 3 {
		t.Fatalf("table %d, want 3", tb)
	}
	if time.Since(d.Time) > time.Minute || time.Until(d.Time) > time.Second {
		t.Fatalf("decoded time %v", d.Time)
	}
}

// clock is an injected clock the test moves.
type clock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration // added on every read when set
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(c.step)
	return c.t
}
func (c *clock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// A small step back is bridged (IDs go on, increasing, from the last
// time); a large one fails until the clock has caught up; NotBefore keeps
// a restarted generator past its predecessor's last time.
func TestClockBackwards(t *testing.T) {
	base := idgen.DefaultEpoch.Add(1000 * time.Hour)
	c := &clock{t: base}
	g, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Sonyflake(), Fixed: map[string]int64{"machine": 1}, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	last, _ := g.Next()
	c.set(base.Add(-5 * time.Millisecond)) // within the 10 ms bridged
	for range 100 {
		id, err := g.Next()
		if err != nil {
			t.Fatalf("small step back: %v", err)
		}
		if id <= last {
			t.Fatalf("id %d not after %d", id, last)
		}
		last = id
	}
	c.set(base.Add(-time.Second))
	if _, err := g.Next(); !errors.Is(err, idgen.ErrClockBackwards) {
		t.Fatalf("large step back: %v, want ErrClockBackwards", err)
	}
	c.set(base.Add(20 * time.Millisecond))
	id, err := g.Next()
	if err != nil || id <= last {
		t.Fatalf("after catching up: %d %v (last %d)", id, err, last)
	}
	// A restart with the clock behind the last ID's time: NotBefore makes
	// it wait for the clock (here a clock that moves 1 ms a read), then
	// issue after the last ID; far behind, it refuses.
	c.set(g.Last().Add(-time.Hour))
	far, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Sonyflake(), Fixed: map[string]int64{"machine": 1}, Now: c.now, NotBefore: g.Last()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := far.Next(); !errors.Is(err, idgen.ErrClockBackwards) {
		t.Fatalf("restart an hour behind: %v, want ErrClockBackwards", err)
	}
	c.mu.Lock()
	c.t, c.step = g.Last().Add(-5*time.Millisecond), time.Millisecond
	c.mu.Unlock()
	g2, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Sonyflake(), Fixed: map[string]int64{"machine": 1}, Now: c.now, NotBefore: g.Last()})
	if err != nil {
		t.Fatal(err)
	}
	id2, err := g2.Next()
	if err != nil || id2 <= id {
		t.Fatalf("restarted generator: %d %v, want after %d", id2, err, id)
	}
}

// A unit's sequence used up: the generator waits for the next unit and
// never repeats.
func TestSequenceExhaustionWaits(t *testing.T) {
	g, err := idgen.NewSnowflake(idgen.Config{Layout: idgen.Sonyflake(), Fixed: map[string]int64{"machine": 2}})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	start := time.Now()
	for range 256 * 5 { // 5 units' worth of 8-bit sequences
		id, err := g.Next()
		if err != nil {
			t.Fatal(err)
		}
		if seen[id] {
			t.Fatalf("repeated %d", id)
		}
		seen[id] = true
	}
	if el := time.Since(start); el < 30*time.Millisecond {
		t.Fatalf("1,280 IDs of a 256-per-10ms layout in %v: the sequence cap was not held", el)
	}
}

// A caller held up between its clock reading and its ID (preempted, a GC
// pause) while others issue IDs in later units is not a clock that went
// back: its reading is simply late. It gets an ID after theirs.
func TestLateClockReadingIsNotABackwardStep(t *testing.T) {
	base := idgen.DefaultEpoch.Add(1000 * time.Hour)
	var cur atomic.Int64
	cur.Store(base.UnixNano())
	var hold atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	now := func() time.Time {
		t := time.Unix(0, cur.Load())
		if hold.CompareAndSwap(true, false) {
			close(entered)
			<-release // the reading goes stale while others run
		}
		return t
	}
	g, err := idgen.NewSnowflake(idgen.Config{Fixed: map[string]int64{"datacenter": 1, "worker": 1}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Next(); err != nil {
		t.Fatal(err)
	}
	hold.Store(true)
	late := make(chan error, 1)
	var lateID int64
	go func() {
		var err error
		lateID, err = g.Next()
		late <- err
	}()
	<-entered
	cur.Add(int64(50 * time.Millisecond)) // five times what is bridged
	other, err := g.Next()
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-late; err != nil {
		t.Fatalf("a late clock reading: %v, want an ID", err)
	}
	if lateID <= other {
		t.Fatalf("the late caller's ID %d is not after %d, issued meanwhile", lateID, other)
	}
}
