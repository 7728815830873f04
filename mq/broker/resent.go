package broker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
)

// resentTable remembers which dead letters were resent, and when, so that
// a listing marks them and a second resend (which would deliver the message
// twice) is refused unless forced. Kept in <dir>/resent.json; at most
// maxResent entries (the oldest go first).
type resentTable struct {
	path  string
	mu    sync.Mutex
	at    map[string]int64 // message ID → unix ms
	dirty bool
}

const maxResent = 100_000

func openResent(path string) (*resentTable, error) {
	t := &resentTable{path: path, at: map[string]int64{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("broker: read %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &t.at); err != nil {
		return nil, fmt.Errorf("broker: %s is not a resent table: %w", path, err)
	}
	return t, nil
}

// get reports when id was resent.
func (t *resentTable) get(id string) (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.at[id]
	return at, ok
}

func (t *resentTable) mark(id string, at int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.at[id] = at
	t.dirty = true
	if len(t.at) > maxResent {
		type e struct {
			id string
			at int64
		}
		all := make([]e, 0, len(t.at))
		for k, v := range t.at {
			all = append(all, e{k, v})
		}
		sort.Slice(all, func(i, j int) bool { return all[i].at < all[j].at })
		for _, x := range all[:len(all)-maxResent/2] {
			delete(t.at, x.id)
		}
	}
}

func (t *resentTable) flush() error {
	t.mu.Lock()
	if !t.dirty {
		t.mu.Unlock()
		return nil
	}
	b, err := json.Marshal(t.at)
	t.dirty = false
	t.mu.Unlock()
	if err != nil {
		return err
	}
	if err := writeFileAtomic(t.path, b); err != nil {
		t.mu.Lock()
		t.dirty = true
		t.mu.Unlock()
		return err
	}
	return nil
}
