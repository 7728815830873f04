package store

import (
	"fmt"
	"sync"
	"testing"
)

// Appenders that reach a segment's end together while the allocator is
// making the next segment all wait for it; each must then go on in the
// segment the first of them added, after the records written meanwhile —
// not add the same segment again and write at its start over them (the
// log then had a hole of zeros that indexing stopped at for good).
func TestConcurrentAppendsAcrossSegmentsLeaveNoHole(t *testing.T) {
	const size = 64 << 10
	c, err := openCommitLog(t.TempDir(), size, quiet())
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var alloc sync.WaitGroup
	alloc.Add(1)
	go func() { defer alloc.Done(); c.allocate(stop) }()
	defer func() {
		close(stop)
		alloc.Wait()
		c.closeAll()
	}()
	const writers, each = 8, 1500
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				m := &Message{Topic: "t", Properties: map[string]string{"w": fmt.Sprint(w)}, Body: make([]byte, 100+(w*37+i*11)%400)}
				if err := c.append(m, func(*Message) {}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := len(c.segs); n < 10 {
		t.Fatalf("%d segments: the test means to cross many", n)
	}
	for i := 1; i < len(c.segs); i++ {
		if c.segs[i].start != c.segs[i-1].start+size {
			t.Fatalf("segment %d starts at %d after one at %d: a segment added twice", i, c.segs[i].start, c.segs[i-1].start)
		}
	}
	n := 0
	pos, err := c.scanRecords(0, c.end(), true, func(m *Message) error { n++; return nil })
	if err != nil || pos != c.end() {
		t.Fatalf("scan stopped at %d of %d after %d records: %v", pos, c.end(), n, err)
	}
	if n != writers*each {
		t.Fatalf("%d records in the log, %d appended", n, writers*each)
	}
}
