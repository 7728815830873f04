package server

import (
	"iter"

	"github.com/tangram-dev/tangram/registry"
)

// instMap holds a service's instances by ID with the last renewal of each:
// one map, not two, for it is most of the registry's memory.
type instMap struct{ m map[string]slot }

type slot struct {
	in   *registry.Instance
	beat int64 // last renewal (unix ms) of an ephemeral instance
}

func (m *instMap) get(id string) *registry.Instance { return m.m[id].in }

func (m *instMap) len() int { return len(m.m) }

func (m *instMap) del(id string) { delete(m.m, id) }

func (m *instMap) beat(id string) int64 { return m.m[id].beat }

// put stores in under id, keeping its last renewal.
func (m *instMap) put(id string, in *registry.Instance) {
	s := m.m[id]
	s.in = in
	m.m[id] = s
}

// setBeat records a renewal of a stored instance.
func (m *instMap) setBeat(id string, ms int64) {
	if s, ok := m.m[id]; ok {
		s.beat = ms
		m.m[id] = s
	}
}

// all iterates over the instances (deleting during it is allowed).
func (m *instMap) all() iter.Seq2[string, *registry.Instance] {
	return func(yield func(string, *registry.Instance) bool) {
		for id, s := range m.m {
			if !yield(id, s.in) {
				return
			}
		}
	}
}
