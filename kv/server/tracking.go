package server

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tangram-dev/tangram/kv/resp"
)

// Client-side caching (CLIENT TRACKING), as Redis 6+: a client that turns
// tracking on is told when a key it read changes, so it can keep the value
// in its own memory. In the default mode the server remembers, per key,
// which clients read it (each shard keeps its own table, under its lock)
// and sends each an "invalidate" message once when the key is written,
// deleted, expired or evicted; the client reads it again to be told again.
// In BCAST mode the server remembers nothing per key: every change of a
// key under one of the client's prefixes is announced. RESP3 clients get a
// push message on their own connection; RESP2 clients name another
// connection (REDIRECT) subscribed to __redis__:invalidate, which gets it
// as a pub/sub message. FLUSHDB/FLUSHALL invalidate everything (a null
// key list).

// tracking is a client's tracking mode; immutable once stored.
type tracking struct {
	bcast, optin, optout, noloop bool
	redirect                     int64
	prefixes                     []string
}

const invalidateChannel = "__redis__:invalidate"

// maxTrackedKeys bounds the keys remembered for tracking clients
// (Redis's tracking-table-max-keys); past it, reads are not remembered
// and the client is told the key changed at once instead (it then simply
// does not cache it).
const maxTrackedKeys = 1 << 20

// trackers indexes what invalidation needs outside the shards: clients by
// ID (for REDIRECT) and the BCAST prefixes.
type trackers struct {
	byID   sync.Map     // int64 → *client, every connected client
	active atomic.Int64 // clients with tracking on: writes skip all of this at 0
	mu     sync.Mutex
	bcast  map[*client]*tracking // clients in BCAST mode
	nbcast int                   // len(bcast)
}

// remember records, after a read-only command, that c read its keys (the
// caller holds their shards' locks).
func (x *ctx) remember(spec *cmdSpec, args [][]byte) {
	c := x.c
	t := c.trk.Load()
	if t == nil || t.bcast || spec.flags&flagReadOnly == 0 {
		return
	}
	if (t.optin && c.caching != 1) || (t.optout && c.caching == -1) {
		return
	}
	for _, k := range spec.keyArgs(args) {
		sh := &x.s.shards[shardOf(k)]
		if x.locked&(1<<shardOf(k)) == 0 {
			continue
		}
		wk := wkey{x.db, string(k)}
		m := sh.tracked[wk]
		if m == nil {
			if sh.trackedN.Load() >= maxTrackedKeys/numShards {
				x.invalidateTo(c, [][]byte{k}) // not remembered: do not cache it
				continue
			}
			if sh.tracked == nil {
				sh.tracked = map[wkey]map[*client]struct{}{}
			}
			m = map[*client]struct{}{}
			sh.tracked[wk] = m
			sh.trackedN.Add(1)
		}
		m[c] = struct{}{}
	}
}

// invalidate tells the clients tracking key (in sh, locked) that it
// changed.
func (x *ctx) invalidate(sh *shard, db int, key string) {
	if sh.tracked != nil {
		wk := wkey{db, key}
		if m := sh.tracked[wk]; m != nil {
			delete(sh.tracked, wk)
			sh.trackedN.Add(-1)
			for c := range m {
				t := c.trk.Load()
				if t == nil || t.bcast || (t.noloop && c == x.c) {
					continue
				}
				x.invalidateTo(c, [][]byte{[]byte(key)})
			}
		}
	}
	tr := &x.s.trackers
	tr.mu.Lock()
	if tr.nbcast == 0 {
		tr.mu.Unlock()
		return
	}
	var to []*client
	for c, t := range tr.bcast {
		if t.noloop && c == x.c {
			continue
		}
		for _, p := range t.prefixes {
			if strings.HasPrefix(key, p) {
				to = append(to, c)
				break
			}
		}
	}
	tr.mu.Unlock()
	for _, c := range to {
		x.invalidateTo(c, [][]byte{[]byte(key)})
	}
}

// invalidateTo sends keys' invalidation (nil keys: everything) for c, to
// c or to its redirect. The current client's own messages wait until its
// reply is out (selfInval), as Redis sends them after the reply.
func (x *ctx) invalidateTo(c *client, keys [][]byte) {
	t := c.trk.Load()
	if t == nil {
		return
	}
	to := c
	if t.redirect != 0 {
		v, ok := x.s.trackers.byID.Load(t.redirect)
		if !ok {
			return // the redirect's client is gone
		}
		to = v.(*client)
	}
	if to == x.c {
		if keys == nil {
			x.selfInval = append(x.selfInval, nil)
		}
		x.selfInval = append(x.selfInval, keys...)
		x.selfAny = true
		return
	}
	if msg := to.invalidation(keys); msg != nil {
		to.push(msg)
	}
}

// invalidation encodes the message for c: a RESP3 push, or for RESP2 a
// pub/sub message on __redis__:invalidate when c subscribes to it (nil
// when it does not: a RESP2 connection has nowhere else to hear it).
func (c *client) invalidation(keys [][]byte) []byte {
	c.mu.Lock()
	v3 := c.v3
	c.mu.Unlock()
	var msg []byte
	if v3 {
		msg = resp.AppendPush(msg, 2, true)
		msg = resp.AppendBulkString(msg, "invalidate")
	} else {
		p := &c.s.pubsub
		p.mu.Lock()
		_, sub := c.subs[invalidateChannel]
		p.mu.Unlock()
		if !sub {
			return nil
		}
		msg = resp.AppendPush(msg, 3, false)
		msg = resp.AppendBulkString(msg, "message")
		msg = resp.AppendBulkString(msg, invalidateChannel)
	}
	if keys == nil {
		if v3 {
			return resp.AppendNull(msg, true)
		}
		return append(msg, "$-1\r\n"...)
	}
	msg = resp.AppendArray(msg, len(keys))
	for _, k := range keys {
		msg = resp.AppendBulk(msg, k)
	}
	return msg
}

// flushSelfInval appends the current client's own invalidations after its
// reply.
func (x *ctx) flushSelfInval() {
	if !x.selfAny {
		return
	}
	keys := x.selfInval
	x.selfInval, x.selfAny = x.selfInval[:0], false
	c := x.c
	all := false
	for _, k := range keys {
		if k == nil {
			all = true
		}
	}
	var msg []byte
	if all {
		msg = c.invalidation(nil)
	} else {
		for _, k := range keys {
			msg = append(msg, c.invalidation([][]byte{k})...)
		}
	}
	if msg == nil {
		return
	}
	if c.lp == nil && c.async.Load() {
		// Goroutine mode with a writer: the reply first, through the
		// same queue.
		c.flush()
		c.push(msg)
		return
	}
	c.out = append(c.out, msg...) // (a loop writes out before anything pushed later)
}

// trackingFlush invalidates everything for every tracking client (FLUSHDB
// and FLUSHALL) and forgets what was remembered; the caller holds every
// shard's lock.
func (x *ctx) trackingFlush() {
	for i := range x.s.shards {
		sh := &x.s.shards[i]
		sh.tracked = nil
		sh.trackedN.Store(0)
	}
	x.s.trackers.byID.Range(func(_, v any) bool {
		c := v.(*client)
		if t := c.trk.Load(); t != nil && !(t.noloop && c == x.c) {
			x.invalidateTo(c, nil)
		}
		return true
	})
}

// cmdClientTracking is CLIENT TRACKING ON|OFF [REDIRECT id] [PREFIX p …]
// [BCAST] [OPTIN] [OPTOUT] [NOLOOP].
func cmdClientTracking(x *ctx, a [][]byte) {
	if len(a) < 3 {
		x.err("ERR wrong number of arguments for 'client|tracking' command")
		return
	}
	c := x.c
	on := false
	switch strings.ToLower(string(a[2])) {
	case "on":
		on = true
	case "off":
	default:
		x.err(errSyntax)
		return
	}
	t := &tracking{}
	for i := 3; i < len(a); i++ {
		switch strings.ToLower(string(a[i])) {
		case "redirect":
			if i+1 >= len(a) {
				x.err(errSyntax)
				return
			}
			id, ok := parseInt(a[i+1])
			if !ok {
				x.err(errNotInt)
				return
			}
			i++
			if id == c.id {
				t.redirect = 0
				continue
			}
			if _, ok := x.s.trackers.byID.Load(id); !ok {
				x.err("ERR The client ID you want redirect to does not exist")
				return
			}
			t.redirect = id
		case "prefix":
			if i+1 >= len(a) {
				x.err(errSyntax)
				return
			}
			t.prefixes = append(t.prefixes, string(a[i+1]))
			i++
		case "bcast":
			t.bcast = true
		case "optin":
			t.optin = true
		case "optout":
			t.optout = true
		case "noloop":
			t.noloop = true
		default:
			x.err(errSyntax)
			return
		}
	}
	cur := c.trk.Load()
	if !on {
		if c.trk.Swap(nil) != nil {
			x.s.trackers.drop(c)
			x.s.trackers.active.Add(-1)
		}
		x.ok()
		return
	}
	if cur != nil && cur.bcast != t.bcast {
		x.err("ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.")
		return
	}
	if len(t.prefixes) > 0 && !t.bcast {
		x.err("ERR PREFIX option requires BCAST mode to be enabled")
		return
	}
	if t.optin && t.optout {
		x.err("ERR You can't specify both OPTIN mode and OPTOUT mode")
		return
	}
	if cur != nil && ((cur.optin && t.optout) || (cur.optout && t.optin)) {
		x.err("ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.")
		return
	}
	if t.bcast && (t.optin || t.optout) {
		x.err("ERR OPTIN and OPTOUT are not compatible with BCAST")
		return
	}
	if t.bcast {
		var existing []string
		if cur != nil {
			existing = cur.prefixes
		}
		// Redis's collision rule: no new prefix may be a prefix of, or
		// have as a prefix, an existing one or another new one.
		for i, p := range t.prefixes {
			for _, e := range existing {
				if strings.HasPrefix(p, e) || strings.HasPrefix(e, p) {
					x.err("ERR Prefix '" + p + "' overlaps with an existing prefix '" + e + "'. Prefixes for a single client must not overlap.")
					return
				}
			}
			for _, q := range t.prefixes[i+1:] {
				if strings.HasPrefix(p, q) || strings.HasPrefix(q, p) {
					x.err("ERR Prefix '" + p + "' overlaps with another provided prefix '" + q + "'. Prefixes for a single client must not overlap.")
					return
				}
			}
		}
		t.prefixes = append(append([]string(nil), existing...), t.prefixes...) // they add up, as in Redis
		if len(t.prefixes) == 0 {
			t.prefixes = []string{""}
		}
	}
	if c.trk.Swap(t) == nil {
		x.s.trackers.active.Add(1)
	}
	if t.bcast {
		x.s.trackers.setBcast(c, t)
	}
	x.ok()
}

func (tr *trackers) setBcast(c *client, t *tracking) {
	tr.mu.Lock()
	if tr.bcast == nil {
		tr.bcast = map[*client]*tracking{}
	}
	tr.bcast[c] = t
	tr.nbcast = len(tr.bcast)
	tr.mu.Unlock()
}

// drop forgets c's BCAST registration (on TRACKING OFF and disconnect); its
// per-key entries are dropped when their keys next change.
func (tr *trackers) drop(c *client) {
	tr.mu.Lock()
	delete(tr.bcast, c)
	tr.nbcast = len(tr.bcast)
	tr.mu.Unlock()
}

// cmdClientCaching is CLIENT CACHING YES|NO: whether the next command's
// reads are remembered (OPTIN: only with YES; OPTOUT: unless NO).
func cmdClientCaching(x *ctx, a [][]byte) {
	if len(a) != 3 {
		x.err("ERR wrong number of arguments for 'client|caching' command")
		return
	}
	t := x.c.trk.Load()
	if t == nil || (!t.optin && !t.optout) {
		x.err("ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled")
		return
	}
	switch strings.ToLower(string(a[2])) {
	case "yes":
		if !t.optin {
			x.err("ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.")
			return
		}
		x.c.cachingSet = 1
	case "no":
		if !t.optout {
			x.err("ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.")
			return
		}
		x.c.cachingSet = -1
	default:
		x.err(errSyntax)
		return
	}
	x.ok()
}

// cmdClientTrackingInfo is CLIENT TRACKINGINFO.
func cmdClientTrackingInfo(x *ctx) {
	t := x.c.trk.Load()
	x.mapHdr(3)
	x.bulkStr("flags")
	var flags []string
	redirect := int64(-1)
	var prefixes []string
	if t == nil {
		flags = []string{"off"}
	} else {
		flags = append(flags, "on")
		if t.bcast {
			flags = append(flags, "bcast")
		}
		if t.optin {
			flags = append(flags, "optin")
			if x.c.cachingSet == 1 {
				flags = append(flags, "caching-yes")
			}
		}
		if t.optout {
			flags = append(flags, "optout")
			if x.c.cachingSet == -1 {
				flags = append(flags, "caching-no")
			}
		}
		if t.noloop {
			flags = append(flags, "noloop")
		}
		redirect = t.redirect
		if t.redirect != 0 {
			if _, ok := x.s.trackers.byID.Load(t.redirect); !ok {
				flags = append(flags, "broken_redirect")
			}
		}
		if t.bcast {
			prefixes = t.prefixes
		}
	}
	x.setHdr(len(flags))
	for _, f := range flags {
		x.bulkStr(f)
	}
	x.bulkStr("redirect")
	x.int(redirect)
	x.bulkStr("prefixes")
	x.array(len(prefixes))
	for _, p := range prefixes {
		x.bulkStr(p)
	}
}

// cmdClientGetRedir is CLIENT GETREDIR: -1 without tracking, 0 without a
// redirect.
func cmdClientGetRedir(x *ctx) {
	t := x.c.trk.Load()
	if t == nil {
		x.int(-1)
		return
	}
	x.int(t.redirect)
}
