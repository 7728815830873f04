package server

import (
	"context"
	"errors"
	"sync"

	"github.com/tangram-dev/tangram/registry"

	"github.com/tangram-dev/tangram/rpc"
)

// Watch streams are served by one fan-out loop: when a service changes, the
// loop sends the (shared, encoded once) change to every stream of it that has
// room, without waking one goroutine per watcher. A stream without room — a
// slow reader — is handed to its own goroutine, which catches up with
// blocking sends; the per-watcher lock keeps the two from interleaving, so a
// watcher sees changes in order.
type pusher struct {
	key  registry.Key
	mu   sync.Mutex // held while sending
	rev  int64      // last revision sent; guarded by mu
	send func(*rpc.SendBatch, *registry.Snapshot) (bool, error)
	wake chan struct{}
}

// subscribe registers a push watcher of k starting after rev (0: full list).
// trySend must not block; it may hold its write back until the batch's Flush.
func (r *Registry) subscribe(k registry.Key, rev int64, trySend func(*rpc.SendBatch, *registry.Snapshot) (bool, error)) *pusher {
	p := &pusher{key: k, rev: rev, send: trySend, wake: make(chan struct{}, 1)}
	r.mu.Lock()
	s := r.svc(k, true)
	if s.pushers == nil {
		s.pushers = map[*pusher]struct{}{}
	}
	s.pushers[p] = struct{}{}
	r.mu.Unlock()
	r.watchers.Add(1)
	return p
}

func (r *Registry) unsubscribe(p *pusher) {
	r.mu.Lock()
	if s := r.svc(p.key, false); s != nil {
		delete(s.pushers, p)
	}
	r.mu.Unlock()
	r.watchers.Add(-1)
}

// pending returns what p has not been sent yet, or nil (r.mu read-held).
func (r *Registry) pendingLocked(s *service, rev int64) *registry.Snapshot {
	if rev <= 0 || rev < s.floor || rev > r.rev {
		snap := r.snapshotLocked(s.key, s)
		return &snap
	}
	if s.rev > rev {
		return s.delta(rev)
	}
	return nil
}

// catchUp sends p everything it lacks, waiting on a slow reader if needed.
func (r *Registry) catchUp(p *pusher, send func(*registry.Snapshot) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		r.mu.RLock()
		s := r.svc(p.key, false)
		var snap *registry.Snapshot
		if s != nil {
			snap = r.pendingLocked(s, p.rev)
		}
		r.mu.RUnlock()
		if snap == nil {
			return nil
		}
		if err := send(snap); err != nil {
			return err
		}
		p.rev = snap.Revision
	}
}

// serve runs a push watcher until ctx ends: the fan-out loop sends what it
// can; this goroutine sends the first list and catches up when woken.
func (r *Registry) serveWatch(ctx context.Context, k registry.Key, rev int64, trySend func(*rpc.SendBatch, *registry.Snapshot) (bool, error), send func(*registry.Snapshot) error) error {
	p := r.subscribe(k, rev, trySend)
	defer r.unsubscribe(p)
	for {
		if err := r.catchUp(p, send); err != nil {
			return err
		}
		select {
		case <-p.wake:
		case <-ctx.Done():
			return nil
		case <-r.stop:
			return errors.New("registry: closed")
		}
	}
}

// markDirty queues a changed service for the fan-out loop (r.mu held).
func (r *Registry) markDirty(k registry.Key) {
	r.dirty[k] = struct{}{}
	select {
	case r.hub <- struct{}{}:
	default:
	}
}

func (r *Registry) fanOut() {
	for {
		select {
		case <-r.stop:
			return
		case <-r.hub:
		}
		r.mu.Lock()
		keys := make([]registry.Key, 0, len(r.dirty))
		for k := range r.dirty {
			keys = append(keys, k)
		}
		clear(r.dirty)
		r.mu.Unlock()
		for _, k := range keys {
			r.pushService(k)
		}
	}
}

func (r *Registry) pushService(k registry.Key) {
	type job struct {
		p    *pusher
		snap *registry.Snapshot
	}
	var jobs []job
	r.mu.RLock()
	s := r.svc(k, false)
	if s == nil {
		r.mu.RUnlock()
		return
	}
	for p := range s.pushers {
		if !p.mu.TryLock() {
			signalWake(p) // busy catching up: it re-checks when done
			continue
		}
		if snap := r.pendingLocked(s, p.rev); snap != nil {
			jobs = append(jobs, job{p, snap})
		} else {
			p.mu.Unlock()
		}
	}
	r.mu.RUnlock()
	// One write per connection for the lot, not one per watcher.
	var b rpc.SendBatch
	defer b.Flush()
	for _, j := range jobs {
		ok, err := j.p.send(&b, j.snap)
		if ok && err == nil {
			j.p.rev = j.snap.Revision
		}
		j.p.mu.Unlock()
		if !ok || err != nil {
			signalWake(j.p) // slow reader or failed stream: its goroutine takes over
		}
	}
}

func signalWake(p *pusher) {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}
