package logfile

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRotation: files never pass the size (lines whole), the newest old
// file is .1, the oldest beyond the count is dropped, and together the
// kept files are the last lines in order.
func TestRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.log")
	w, err := Open(p, 20, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		fmt.Fprintf(w, "line %02d\n", i) // 8 bytes: two per file
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files := Files(p)
	want := []string{p + ".2", p + ".1", p}
	if strings.Join(files, " ") != strings.Join(want, " ") {
		t.Fatalf("files %v, want %v", files, want)
	}
	if got := read(t, p+".2") + read(t, p+".1") + read(t, p); got != "line 04\nline 05\nline 06\nline 07\nline 08\nline 09\n" {
		t.Fatalf("kept %q", got)
	}
	if _, err := os.Stat(p + ".3"); !os.IsNotExist(err) {
		t.Fatalf("a fourth file was kept: %v", err)
	}
	var out bytes.Buffer
	if err := Copy(context.Background(), p, &out, false, nil, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if out.String() != "line 04\nline 05\nline 06\nline 07\nline 08\nline 09\n" {
		t.Fatalf("Copy printed %q", out.String())
	}
}

// TestCutsAtLineEnds: a write of many lines (a pipe's read) is cut at
// line ends across files; a line longer than a file is split; reopening
// continues the current file's size.
func TestCutsAtLineEnds(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.log")
	w, err := Open(p, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	in := "abc\ndefg\nhij\n" // 4 + 5 + 4 bytes: the third line does not fit
	if n, err := w.Write([]byte(in)); err != nil || n != len(in) {
		t.Fatalf("write: %d %v", n, err)
	}
	w.Close()
	if read(t, p+".1") != "abc\ndefg\n" || read(t, p) != "hij\n" {
		t.Fatalf("lines: .1 %q, current %q", read(t, p+".1"), read(t, p))
	}
	w, err = Open(p, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 15) + "\n"
	if n, err := w.Write([]byte(long)); err != nil || n != len(long) {
		t.Fatalf("long write: %d %v", n, err)
	}
	w.Close()
	// "hij\n" had room for 6 more bytes but no line end in them: the
	// long line starts a file of its own and is split at 10 bytes.
	if read(t, p+".2") != "hij\n" || read(t, p+".1") != strings.Repeat("x", 10) || read(t, p) != "xxxxx\n" {
		t.Fatalf("long line: .2 %q .1 %q current %q", read(t, p+".2"), read(t, p+".1"), read(t, p))
	}
	if _, err := w.Write([]byte("late")); err == nil {
		t.Fatal("a write after Close succeeded")
	}
	if _, err := Open(p, 10, 0); err == nil {
		t.Fatal("0 files accepted")
	}
}

// TestFollowAcrossRotations: a follower started before the writer sees
// every line once, in order, while the file rotates under it (a poll
// shorter than the writer's pace), and stops when done says so.
func TestFollowAcrossRotations(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.log")
	w, err := Open(p, 64, 3)
	if err != nil {
		t.Fatal(err)
	}
	const lines = 200
	var finished atomic.Bool
	var out syncBuf
	errc := make(chan error, 1)
	go func() {
		errc <- Copy(context.Background(), p, &out, true, finished.Load, 100*time.Microsecond)
	}()
	for i := range lines {
		fmt.Fprintf(w, "line %03d\n", i)
		if i%4 == 3 {
			// Pace the writer: wait for the follower every 4 lines (a file
			// holds 7), so at most one rotation happens between its polls.
			if !out.waitSuffix(fmt.Sprintf("line %03d\n", i), 5*time.Second) {
				t.Fatalf("the follower did not print line %d", i)
			}
		}
	}
	w.Close()
	finished.Store(true)
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Copy did not stop when done")
	}
	var want strings.Builder
	for i := range lines {
		fmt.Fprintf(&want, "line %03d\n", i)
	}
	if out.String() != want.String() {
		t.Fatalf("followed output differs:\n%s", out.String())
	}
}

// syncBuf is a buffer written by the follower and read by the test,
// which can wait for what it expects to be written.
type syncBuf struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed and replaced at each write
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written != nil {
		close(s.written)
		s.written = nil
	}
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitSuffix waits until the buffer ends with suffix, woken by writes;
// false if it did not within d.
func (s *syncBuf) waitSuffix(suffix string, d time.Duration) bool {
	timeout := time.After(d)
	for {
		s.mu.Lock()
		if strings.HasSuffix(s.b.String(), suffix) {
			s.mu.Unlock()
			return true
		}
		if s.written == nil {
			s.written = make(chan struct{})
		}
		ch := s.written
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timeout:
			return false
		}
	}
}
