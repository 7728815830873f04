package idgen_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/idgen"
	"github.com/tangram-dev/tangram/internal/wait"
)

// memSource is a segment table in memory: ranges of the step asked for
// (at least the tag's step, 10), and a switch to make fetches fail.
type memSource struct {
	mu    sync.Mutex
	max   int64
	steps []int64
	fail  atomic.Bool
	calls atomic.Int64
}

func (m *memSource) fetch(ctx context.Context, tag string, step int64) (idgen.Segment, error) {
	m.calls.Add(1)
	if m.fail.Load() {
		return idgen.Segment{}, errors.New("store down")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	step = max(step, 10)
	m.steps = append(m.steps, step)
	sg := idgen.Segment{Tag: tag, Start: m.max, End: m.max + step, Step: 10}
	m.max += step
	return sg, nil
}

// The double buffer: the next range is fetched at a tenth of the current
// one, the step doubles while ranges are used up fast, IDs ascend without
// repeats, and a failing source is an error only once both ranges are
// used up.
func TestSegmentsDoubleBuffer(t *testing.T) {
	src := &memSource{max: 1}
	s, err := idgen.NewSegments(idgen.SegmentConfig{Source: src.fetch, MaxStep: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	first, err := s.Next(ctx, "t")
	if err != nil || first != 1 {
		t.Fatalf("first ID %d %v", first, err)
	}
	if _, err := s.Next(ctx, "t"); err != nil { // the second ID: a tenth of 10 used, the next range comes
		t.Fatal(err)
	}
	wait.For(t, 5*time.Second, "the prefetch", func() bool { return src.calls.Load() == 2 })
	a := s.Alloc("t")
	prev := int64(2)
	for range 500 {
		id, err := a.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if id <= prev {
			t.Fatalf("ID %d after %d", id, prev)
		}
		prev = id
	}
	src.mu.Lock()
	steps := slices.Clone(src.steps)
	src.mu.Unlock()
	if steps[len(steps)-1] != 80 || !slices.IsSorted(steps) {
		t.Fatalf("steps asked %v: want doubling up to the cap 80", steps)
	}
	src.fail.Store(true)
	var gotErr error
	for range 200 {
		if _, gotErr = a.Next(ctx); gotErr != nil {
			break
		}
	}
	if gotErr == nil || !strings.Contains(gotErr.Error(), "store down") || !strings.Contains(gotErr.Error(), "range of t") {
		t.Fatalf("with the source down: %v", gotErr)
	}
	src.fail.Store(false)
	if _, err := a.Next(ctx); err != nil {
		t.Fatalf("after the source came back: %v", err)
	}
	st := s.States()
	if len(st) != 1 || st[0].Tag != "t" || st[0].Next > st[0].End {
		t.Fatalf("states %+v", st)
	}
	_ = s.Close()
	var closedErr error
	for range 200 { // what is left of the current range, then the error
		if _, closedErr = s.Next(ctx, "t"); closedErr != nil {
			break
		}
	}
	if !errors.Is(closedErr, idgen.ErrSegmentsClosed) {
		t.Fatalf("after Close: %v", closedErr)
	}
}
