package server

import (
	"sort"
	"strings"
	"time"
)

// KeyInfo is one key as the console lists it.
type KeyInfo struct {
	Key   string
	Type  string
	TTL   time.Duration // -1: no expiry
	Bytes int64         // estimated size
}

// Browse returns up to limit keys of db matching pattern (a glob), sorted,
// visiting one shard at a time, and whether there were more.
func (s *Server) Browse(db int, pattern string, limit int) ([]KeyInfo, bool) {
	if db < 0 || db >= s.cfg.Databases {
		return nil, false
	}
	if pattern == "" {
		pattern = "*"
	}
	now := nowMs()
	var out []KeyInfo
	more := false
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		if t := sh.dbs[db]; t != nil {
			t.each(func(k string, e *entry) bool {
				if e.exp != 0 && e.exp < now {
					return true
				}
				if !globMatch([]byte(pattern), []byte(k), false) {
					return true
				}
				if len(out) >= limit {
					more = true
					return false
				}
				ki := KeyInfo{Key: k, Type: kindName(e.kind), TTL: -1, Bytes: e.size(k)}
				if e.exp != 0 {
					ki.TTL = time.Duration(e.exp-now) * time.Millisecond
				}
				out = append(out, ki)
				return true
			})
		}
		sh.mu.Unlock()
		if more {
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, more
}

// Overview is the console's summary of the server.
type Overview struct {
	Addr             string
	Keys             int64
	UsedMemory, RSS  int64
	MaxMemory        int64
	Policy           string
	Clients          int
	Expired, Evicted int64
	AOF              bool
	Fsync            string
	AOFSize, AOFBase int64
	Rewrites         int
	Uptime           time.Duration
	TopCommands      []CommandCount
	SlowLog          []SlowEntry
	Databases        int
}

// CommandCount is a command and how often it ran.
type CommandCount struct {
	Name  string
	Calls int64
	Usec  int64
}

// SlowEntry is a slow-log entry.
type SlowEntry struct {
	At       time.Time
	Duration time.Duration
	Command  string
	Client   string
}

// Overview returns the console's summary.
func (s *Server) Overview() Overview {
	o := Overview{Addr: s.Addr(), Keys: s.dbsize(-1), UsedMemory: s.usedMemory(), RSS: rss(), MaxMemory: s.maxMem.Load(),
		Policy: s.policy.Load().(string), Expired: s.stats.expired.Load(), Evicted: s.stats.evicted.Load(),
		Uptime: time.Since(s.startAt).Round(time.Second), Databases: s.cfg.Databases}
	s.mu.Lock()
	o.Clients = len(s.clients)
	s.mu.Unlock()
	if s.aof != nil {
		st := s.aof.status()
		o.AOF, o.Fsync, o.AOFSize, o.AOFBase, o.Rewrites = true, s.aof.policy, st.size, st.baseSize, st.rewrites
	}
	cs := s.stats.commandStats()
	sort.Slice(cs, func(i, j int) bool { return cs[i].calls > cs[j].calls })
	for i, c := range cs {
		if i == 10 {
			break
		}
		o.TopCommands = append(o.TopCommands, CommandCount{Name: c.name, Calls: c.calls, Usec: c.usec})
	}
	s.slow.mu.Lock()
	for _, e := range s.slow.entries {
		o.SlowLog = append(o.SlowLog, SlowEntry{At: e.at, Duration: e.dur, Command: strings.Join(e.args, " "), Client: e.client})
	}
	s.slow.mu.Unlock()
	return o
}
