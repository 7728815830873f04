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
// silent past RemoveAfter, unless self-preservation holds them. It takes
// the registry lock one service at a time: a sweep of 100,000 instances
// under one hold stalled every registration and push behind it for tens of
// milliseconds each second. The self-preservation decision uses the count
// of owned instances from the previous sweep (a second old).
func (r *Registry) expire() {
	now := r.now()
	r.mu.Lock()
	for k, t := range r.tombs {
		if now.Sub(t.at) > 10*time.Minute {
			delete(r.tombs, k)
		}
	}
	r.advance(now)
	expected := r.ownedEphemeral * int64(r.cfg.PreservationWindow/r.cfg.HeartbeatInterval)
	owned := r.ownedEphemeral
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
	keys := make([]registry.Key, 0, len(r.services))
	for k := range r.services {
		keys = append(keys, k)
	}
	r.mu.Unlock()
	var count int64
	for _, k := range keys {
		r.mu.Lock()
		if s := r.services[k]; s != nil {
			count += r.expireServiceLocked(k, s, now, preserve)
		}
		r.mu.Unlock()
	}
	r.mu.Lock()
	r.ownedEphemeral = count
	r.mu.Unlock()
}

// expireServiceLocked sweeps one service and returns how many ephemeral
// instances this server owns in it afterwards. r.mu must be held.
func (r *Registry) expireServiceLocked(k registry.Key, s *service, now time.Time, preserve bool) int64 {
	nowMs := now.UnixMilli()
	var owned int64
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
			continue
		case silent >= r.cfg.UnhealthyAfter && in.Healthy:
			tk := tombKey{k, id}
			r.flaps[tk] = append(r.flaps[tk], nowMs)
			c := in.Clone()
			c.Healthy, c.Version = false, r.version()
			s.instances.put(id, c)
			r.emit(k, s, registry.EventPut, c)
		}
		owned++
	}
	return owned
}
