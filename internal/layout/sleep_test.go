package layout

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoSleepsInTests: tests wait for events (internal/wait), never for a
// fixed time. A time.Sleep in a test must carry a "sleep-ok:" comment on its
// line saying why the sleep is the behaviour under test (a handler that
// takes its time, a link that times out) rather than a wait for something.
func TestNoSleepsInTests(t *testing.T) {
	root := "../.."
	var bad []string
	allowed := 0
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "testdata", "bench", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") || strings.HasSuffix(path, "internal/layout/sleep_test.go") {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			if !strings.Contains(line, "time.Sleep(") {
				continue
			}
			if strings.Contains(line, "// sleep-ok: ") {
				allowed++
				continue
			}
			rel, _ := filepath.Rel(root, path)
			bad = append(bad, rel+":"+strconv.Itoa(n)+": "+strings.TrimSpace(line))
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Errorf("%s\n\twait for an event with internal/wait instead (or, if the sleep is the behaviour under test, say so: // sleep-ok: <why>)", b)
	}
	const maxAllowed = 12 // keep the allow-list short
	if allowed > maxAllowed {
		t.Errorf("%d sleeps marked sleep-ok, more than %d: the allow-list is for sleeps that are the behaviour under test", allowed, maxAllowed)
	}
	t.Logf("%d allow-listed sleeps", allowed)
}
