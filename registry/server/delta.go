package server

import "github.com/tangram-dev/tangram/registry"

// emit records a change made on this server and gossips it to the other
// servers when the instance is ephemeral (r.mu held for writing).
func (r *Registry) emit(k registry.Key, s *service, typ string, in *registry.Instance) {
	r.record(k, s, typ, in)
	if r.gossip != nil && in.Ephemeral {
		r.gossip.queue(typ, in)
	}
}

// record stores a change in the service's log and wakes its watchers.
func (r *Registry) record(k registry.Key, s *service, typ string, in *registry.Instance) {
	r.rev++
	s.rev = r.rev
	s.log = append(s.log, newChange(r.rev, typ, in))
	// A watcher further behind than a quarter of the service's size is sent
	// a snapshot instead, which is no bigger than the changes it missed; so
	// the log keeps at most LogSize and about half the service's size,
	// trimmed in place in batches (amortised O(1), no allocation).
	keep := min(r.cfg.LogSize, max(minLog, s.instances.len()/4))
	if len(s.log) >= 2*keep {
		over := len(s.log) - keep
		s.floor = s.log[over-1].rev()
		n := copy(s.log, s.log[over:])
		clear(s.log[n:])
		s.log = s.log[:n]
	}
	if typ == registry.EventDelete {
		s.emptied = s.instances.len() == 0
	} else {
		s.emptied = false
	}
	close(s.changed)
	s.changed = make(chan struct{})
	if len(s.pushers) > 0 {
		r.markDirty(k)
	}
}

// delta returns the changes after rev. Watchers woken by one change all ask
// for the same range: they share one Snapshot, and so one encoding of it.
func (s *service) delta(rev int64) *registry.Snapshot {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if d := s.lastDelta; d != nil && d.from == rev && d.snap.Revision == s.rev {
		return d.snap
	}
	snap := &registry.Snapshot{Key: s.key, Revision: s.rev, Node: s.node}
	snap.ShareEncoding()
	for _, c := range s.log {
		if c.rev() > rev {
			snap.Events = append(snap.Events, c.event())
		}
	}
	s.lastDelta = &deltaCache{from: rev, snap: snap}
	return snap
}

// change is one entry of a service's log: 16 bytes (the revision and the
// event type share a word), for the registry keeps many.
type change struct {
	rt int64 // revision<<1 | 1 for a deletion
	in *registry.Instance
}

func newChange(rev int64, typ string, in *registry.Instance) change {
	c := change{rt: rev << 1, in: in}
	if typ == registry.EventDelete {
		c.rt |= 1
	}
	return c
}

func (c change) rev() int64 { return c.rt >> 1 }

func (c change) event() registry.Event {
	typ := registry.EventPut
	if c.rt&1 == 1 {
		typ = registry.EventDelete
	}
	return registry.Event{Revision: c.rev(), Type: typ, Instance: c.in}
}

type deltaCache struct {
	from int64
	snap *registry.Snapshot
}
