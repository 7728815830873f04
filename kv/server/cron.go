package server

import (
	"math/rand/v2"
	"slices"
	"time"
)

var policies = []string{"noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random", "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"}

func validPolicy(p string) bool { return slices.Contains(policies, p) }

// cron runs ten times a second: the LRU clock, the active expiry cycle
// and a step of each shard's incremental rehash.
func (s *Server) cron() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	next := 0
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.tickLRU()
		next = s.activeExpire(next, 25*time.Millisecond)
		for i := range s.shards {
			sh := &s.shards[i]
			sh.mu.Lock()
			for _, t := range sh.dbs {
				if t != nil {
					t.shrinkIfSparse()
					t.rehashStep(100)
				}
			}
			sh.mu.Unlock()
		}
	}
}

// activeExpire is Redis's active expiry cycle: from each shard's pool of
// keys with a TTL it samples 20; it deletes the expired ones and samples
// again while more than a quarter were expired, within a time budget per
// run. It returns the shard to start from next time.
func (s *Server) activeExpire(start int, budget time.Duration) int {
	deadline := time.Now().Add(budget)
	x := &ctx{s: s, c: &client{s: s}}
	x.c.x.s = s
	for n := 0; n < numShards; n++ {
		i := (start + n) % numShards
		sh := &s.shards[i]
		for db := range sh.vol {
			for {
				if time.Now().After(deadline) {
					return i
				}
				sh.mu.Lock()
				v := sh.vol[db]
				if v == nil || v.len() == 0 {
					sh.mu.Unlock()
					break
				}
				x.reset()
				x.locked = 1 << i
				x.memo = memo{} // a new lock section: what the memo points at may be gone
				x.db = db
				x.now = nowMs()
				var expired []string
				sampled := 0
				v.sample(20, func(nd *node[struct{}]) {
					sampled++
					if e := sh.dbs[db].find(nd.key); e == nil || (e.exp != 0 && e.exp < x.now) {
						expired = append(expired, nd.key)
					}
				})
				for _, k := range expired {
					if e := sh.dbs[db].find(k); e == nil {
						v.remove(k)
						continue
					}
					x.expire(sh, []byte(k))
				}
				x.finish(nil, nil)
				sh.mu.Unlock()
				if sampled == 0 || len(expired)*4 <= sampled {
					break
				}
			}
		}
	}
	return start
}

// freeMemory evicts keys by the policy until the data fits maxmemory; it
// reports whether the write may go ahead.
func (s *Server) freeMemory() bool {
	limit := s.maxMem.Load()
	if limit <= 0 || s.usedMemory() <= limit {
		return true
	}
	policy := s.policy.Load().(string)
	if policy == "noeviction" {
		return false
	}
	volatile := policy[:3] == "vol"
	x := &ctx{s: s, c: &client{s: s}}
	x.c.x.s = s
	for tries := 0; s.usedMemory() > limit && tries < 10000; tries++ {
		// Sample 5 keys from a few random shards (Redis's approximated
		// LRU/LFU); evict the best candidate.
		type cand struct {
			sh    int
			db    int
			key   string
			score int64
		}
		var best *cand
		for j := 0; j < 4; j++ {
			i := rand.IntN(numShards)
			sh := &s.shards[i]
			sh.mu.Lock()
			for db, t := range sh.dbs {
				if t == nil || t.len() == 0 {
					continue
				}
				pick := func(k string, e *entry) {
					var sc int64
					switch policy {
					case "allkeys-lru", "volatile-lru":
						sc = int64(s.lruClock()-e.lru) & (1<<24 - 1)
					case "allkeys-lfu", "volatile-lfu":
						sc = 255 - int64(e.lfu)
					case "volatile-ttl":
						sc = -e.exp
					default:
						sc = rand.Int64()
					}
					if best == nil || sc > best.score {
						best = &cand{sh: i, db: db, key: k, score: sc}
					}
				}
				if volatile {
					if v := sh.vol[db]; v != nil {
						v.sample(5, func(n *node[struct{}]) {
							if e := t.find(n.key); e != nil {
								pick(n.key, e)
							}
						})
					}
				} else {
					t.sample(5, func(n *node[entry]) { pick(n.key, &n.val) })
				}
			}
			sh.mu.Unlock()
		}
		if best == nil {
			return false
		}
		sh := &s.shards[best.sh]
		sh.mu.Lock()
		x.reset()
		x.locked = 1 << best.sh
		x.memo = memo{} // a new lock section: what the memo points at may be gone
		x.db = best.db
		x.now = nowMs()
		if x.delete([]byte(best.key)) {
			s.stats.evicted.Add(1)
			x.prop = append(x.prop, propRec{best.sh, [][]byte{[]byte("DEL"), []byte(best.key)}})
		}
		x.finish(nil, nil)
		sh.mu.Unlock()
	}
	return s.usedMemory() <= limit
}
