package server

import (
	"time"

	"github.com/tangram-dev/tangram/registry"
)

// countRenewal adds one renewal to the current second's bucket.
func (r *Registry) countRenewal(now time.Time) {
	r.advance(now)
	r.renews[len(r.renews)-1]++
}

// advance shifts the renewal ring to now.
func (r *Registry) advance(now time.Time) {
	sec := now.Unix()
	if r.renewSec == 0 {
		r.renewSec = sec
		return
	}
	shift := sec - r.renewSec
	if shift <= 0 {
		return
	}
	n := int64(len(r.renews))
	if shift >= n {
		clear(r.renews)
	} else {
		copy(r.renews, r.renews[shift:])
		clear(r.renews[n-shift:])
	}
	r.renewSec = sec
}

func (r *Registry) renewalsLocked(now time.Time) int64 {
	var sum int64
	if now.Unix()-r.renewSec >= int64(len(r.renews)) {
		return 0
	}
	skip := now.Unix() - r.renewSec // buckets older than the window
	for i, v := range r.renews {
		if int64(i) >= skip {
			sum += v
		}
	}
	return sum
}

func (r *Registry) expectedLocked() int64 {
	var n int64
	for _, s := range r.services {
		for _, in := range s.instances.all() {
			if in.Ephemeral && in.Owner == r.cfg.NodeName {
				n++
			}
		}
	}
	return n * int64(r.cfg.PreservationWindow/r.cfg.HeartbeatInterval)
}

// every runs fn every d until Close.
func (r *Registry) every(d time.Duration, fn func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			fn()
		}
	}
}

// expire marks silent ephemeral instances unhealthy and removes the ones
// silent past RemoveAfter, unless self-preservation holds them.
func (r *Registry) expire() {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, t := range r.tombs {
		if now.Sub(t.at) > 10*time.Minute {
			delete(r.tombs, k)
		}
	}
	r.advance(now)
	expected := r.expectedLocked()
	owned := expected / max(int64(r.cfg.PreservationWindow/r.cfg.HeartbeatInterval), 1)
	renewals := r.renewalsLocked(now)
	preserve := !r.cfg.DisableSelfPreservation && owned >= int64(r.cfg.PreservationMinInstances) &&
		now.Sub(r.started) >= r.cfg.PreservationWindow &&
		float64(renewals) < r.cfg.PreservationThreshold*float64(expected)
	if preserve != r.preserve {
		r.preserve = preserve
		if preserve {
			r.log.Warn("registry: self-preservation on: renewals fell below the threshold; expired instances are kept (a network fault is likelier than mass death)",
				"renewals", renewals, "expected", expected, "max_hold", r.cfg.PreservationMax)
		} else {
			r.log.Info("registry: self-preservation off", "renewals", renewals, "expected", expected)
		}
	}
	nowMs := now.UnixMilli()
	for k, s := range r.services {
		for id, in := range s.instances.all() {
			if since, ok := r.orphaned[in.Owner]; ok && in.Ephemeral && now.Sub(since) >= r.cfg.RemoveAfter {
				// Its owner left the cluster (or is cut off) and no client
				// renewed it here: drop the replica, quietly (each server
				// does the same for itself).
				s.instances.del(id)
				r.record(k, s, registry.EventDelete, in)
				continue
			}
			if !in.Ephemeral || in.Owner != r.cfg.NodeName {
				continue
			}
			silent := time.Duration(nowMs-s.instances.beat(id)) * time.Millisecond
			switch {
			case silent >= r.cfg.RemoveAfter && (!preserve || silent >= r.cfg.PreservationMax):
				r.log.Info("registry: instance expired", "service", k.String(), "id", id, "silent", silent.Round(time.Millisecond))
				r.removeLocked(k, id)
				r.metrics.expired.Inc()
			case silent >= r.cfg.UnhealthyAfter && in.Healthy:
				tk := tombKey{k, id}
				r.flaps[tk] = append(r.flaps[tk], nowMs)
				c := in.Clone()
				c.Healthy, c.Version = false, r.version()
				s.instances.put(id, c)
				r.emit(k, s, registry.EventPut, c)
			}
		}
	}
}
