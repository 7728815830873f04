package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/mq/wire"
)

type qkey struct {
	topic string
	queue uint32
}

// offsetTable keeps consumer groups' committed offsets, saved to a JSON
// file every second when changed, and durably (fsynced, to path.sync) every
// SyncEvery and on Close. A process crash loses at most the last second's
// commits, a power loss at most SyncEvery's: those messages are delivered
// again (at least once). The per-second write is not fsynced because each
// fsync forces a filesystem journal commit, and appenders writing the
// memory-mapped commitlog wait for it — a 2–5 ms stall of every send, once
// a second, seen in the end-to-end latency's tail. Each save carries a
// sequence number; loading takes the newer valid file of the two.
type offsetTable struct {
	path       string
	mu         sync.Mutex
	m          map[string]map[qkey]int64
	epoch      map[string]int64 // group -> last reset (unix ms)
	dirty      bool
	seq        int64
	syncedSeq  int64
	lastSynced time.Time
}

// offsetSyncEvery is how often saved offsets are made durable.
const offsetSyncEvery = 30 * time.Second

// offsetsSaved is the offsets file: a sequence number and the groups. The
// file written before sequence numbers is a bare array of groups (seq 0).
type offsetsSaved struct {
	Seq    int64        `json:"seq"`
	Groups []offsetFile `json:"groups"`
}

func readOffsets(path string) (*offsetsSaved, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var sv offsetsSaved
	if t := strings.TrimSpace(string(data)); strings.HasPrefix(t, "[") {
		err = json.Unmarshal(data, &sv.Groups)
	} else {
		err = json.Unmarshal(data, &sv)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &sv, nil
}

type offsetFile struct {
	Group   string             `json:"group"`
	Epoch   int64              `json:"epoch,omitempty"`
	Offsets []wire.QueueOffset `json:"offsets"`
}

func openOffsets(path string) (*offsetTable, error) {
	t := &offsetTable{path: path, m: map[string]map[qkey]int64{}, epoch: map[string]int64{}, lastSynced: time.Now()}
	main, mainErr := readOffsets(path)
	synced, syncErr := readOffsets(path + ".sync")
	var sv *offsetsSaved
	switch {
	case mainErr == nil && (syncErr != nil || main.Seq >= synced.Seq):
		sv = main
	case syncErr == nil:
		// The per-second file is older, torn or gone (a power loss after a
		// write that was never fsynced): the durable copy is newer.
		sv = synced
	case errors.Is(mainErr, os.ErrNotExist) && errors.Is(syncErr, os.ErrNotExist):
		return t, nil
	default:
		return nil, fmt.Errorf("broker: consumer offsets: %w", errors.Join(mainErr, syncErr))
	}
	t.seq = sv.Seq
	for _, f := range sv.Groups {
		g := map[qkey]int64{}
		for _, o := range f.Offsets {
			g[qkey{o.Topic, o.Queue}] = o.Offset
		}
		t.m[f.Group] = g
		t.epoch[f.Group] = f.Epoch
	}
	return t, nil
}

// groupEpoch is the group's reset epoch.
func (t *offsetTable) groupEpoch(group string) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.epoch[group]
}

// reset sets offsets and starts a new epoch: commits from consumers that
// read their offsets before it are ignored.
func (t *offsetTable) reset(group string, offs []wire.QueueOffset) int64 {
	t.mu.Lock()
	e := max(time.Now().UnixMilli(), t.epoch[group]+1)
	t.epoch[group] = e
	t.mu.Unlock()
	t.commit(group, e, offs)
	return e
}

// commit records offsets; false when epoch is stale.
func (t *offsetTable) commit(group string, epoch int64, offs []wire.QueueOffset) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if epoch < t.epoch[group] {
		return false
	}
	g := t.m[group]
	if g == nil {
		g = map[qkey]int64{}
		t.m[group] = g
	}
	for _, o := range offs {
		k := qkey{o.Topic, o.Queue}
		if cur, ok := g[k]; !ok || cur != o.Offset {
			g[k] = o.Offset
			t.dirty = true
		}
	}
	return true
}

// get returns a group's offset in a queue, -1 when it has none.
func (t *offsetTable) get(group, topic string, queue uint32) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if o, ok := t.m[group][qkey{topic, queue}]; ok {
		return o
	}
	return -1
}

type groupOffset struct {
	Group string
	wire.QueueOffset
}

func (t *offsetTable) all() []groupOffset {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []groupOffset
	for g, m := range t.m {
		for k, o := range m {
			out = append(out, groupOffset{g, wire.QueueOffset{Topic: k.topic, Queue: k.queue, Offset: o}})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		if a.Topic != b.Topic {
			return a.Topic < b.Topic
		}
		return a.Queue < b.Queue
	})
	return out
}

func (t *offsetTable) dropTopic(topic string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, g := range t.m {
		for k := range g {
			if k.topic == topic {
				delete(g, k)
				t.dirty = true
			}
		}
	}
}

func (t *offsetTable) flush(durable bool) error {
	t.mu.Lock()
	durable = durable || time.Since(t.lastSynced) >= offsetSyncEvery
	if !t.dirty && !(durable && t.seq > t.syncedSeq) {
		t.mu.Unlock()
		return nil
	}
	t.dirty = false
	t.seq++
	seq := t.seq
	var fs []offsetFile
	for g, m := range t.m {
		f := offsetFile{Group: g, Epoch: t.epoch[g]}
		for k, o := range m {
			f.Offsets = append(f.Offsets, wire.QueueOffset{Topic: k.topic, Queue: k.queue, Offset: o})
		}
		slices.SortFunc(f.Offsets, func(a, b wire.QueueOffset) int {
			if a.Topic != b.Topic {
				if a.Topic < b.Topic {
					return -1
				}
				return 1
			}
			return int(a.Queue) - int(b.Queue)
		})
		fs = append(fs, f)
	}
	t.mu.Unlock()
	slices.SortFunc(fs, func(a, b offsetFile) int {
		if a.Group < b.Group {
			return -1
		}
		if a.Group > b.Group {
			return 1
		}
		return 0
	})
	data, err := json.Marshal(offsetsSaved{Seq: seq, Groups: fs})
	if err != nil {
		return err
	}
	err = writeFileFast(t.path, data)
	if err == nil && durable {
		err = writeFileAtomic(t.path+".sync", data)
	}
	t.mu.Lock()
	if err != nil {
		t.dirty = true
	} else if durable {
		t.lastSynced, t.syncedSeq = time.Now(), seq
	}
	t.mu.Unlock()
	return err
}

// writeFileFast replaces path with data by a rename (never a torn file
// after a process crash) without fsync.
func writeFileFast(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return fmt.Errorf("broker: writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("broker: writing %s: %w", path, err)
	}
	return nil
}

// consumerTable tracks the live consumers of each group (by heartbeat) and
// the queue locks of ordered consumption. A consumer's session is its
// connections: when the last one closes (the process died or left) and no
// heartbeat comes on a new one within grace, the consumer leaves its
// groups and its queue locks are released — within seconds, so another
// consumer takes its ordered queues over. The lock TTL remains for a
// consumer cut off silently (its connection never seen to close).
type consumerTable struct {
	timeout, lockTTL, grace time.Duration
	mu                      sync.Mutex
	groups                  map[string]map[string]consumerEntry
	locks                   map[lockKey]queueLock
	sessions                map[string]*session // by client ID
}

// session is a client's open connections to this broker.
type session struct {
	conns map[context.Context]func() bool // connection → stop its close hook
	lost  time.Time                       // when the last one closed (zero: open)
}

type consumerEntry struct {
	seen   time.Time
	topics []string
	addr   string // where its heartbeats come from
}

type lockKey struct {
	group, topic string
	queue        uint32
}

type queueLock struct {
	client  string
	expires time.Time
}

func newConsumerTable(timeout, lockTTL, grace time.Duration) *consumerTable {
	return &consumerTable{timeout: timeout, lockTTL: lockTTL, grace: grace, groups: map[string]map[string]consumerEntry{},
		locks: map[lockKey]queueLock{}, sessions: map[string]*session{}}
}

// attach ties client to the connection conn (rpc.ConnContext of its call):
// when that closes, and no other connection of the client is open, the
// client's session is lost and it is gone grace later unless it comes back.
func (c *consumerTable) attach(client string, conn context.Context) {
	if conn == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ss := c.sessions[client]
	if ss == nil {
		ss = &session{conns: map[context.Context]func() bool{}}
		c.sessions[client] = ss
	}
	ss.lost = time.Time{}
	if _, ok := ss.conns[conn]; ok || conn.Err() != nil {
		return
	}
	ss.conns[conn] = context.AfterFunc(conn, func() { c.detach(client, conn) })
}

func (c *consumerTable) detach(client string, conn context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ss := c.sessions[client]
	if ss == nil {
		return
	}
	delete(ss.conns, conn)
	if len(ss.conns) == 0 {
		ss.lost = time.Now()
	}
}

// goneLocked reports whether client's session was lost more than grace ago.
func (c *consumerTable) goneLocked(client string, now time.Time) bool {
	ss := c.sessions[client]
	return ss != nil && !ss.lost.IsZero() && now.Sub(ss.lost) > c.grace
}

// beat records a consumer (heartbeating from addr) and returns the group's
// live clients, sorted.
func (c *consumerTable) beat(group, client string, topics []string, now time.Time, addr ...string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.groups[group]
	if g == nil {
		g = map[string]consumerEntry{}
		c.groups[group] = g
	}
	e := consumerEntry{seen: now, topics: topics}
	if len(addr) > 0 {
		e.addr = addr[0]
	}
	g[client] = e
	return c.clientsLocked(group, now)
}

// conns describes the group's live members.
func (c *consumerTable) conns(group string) []wire.ClientConn {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var out []wire.ClientConn
	for id, e := range c.groups[group] {
		if now.Sub(e.seen) <= c.timeout && !c.goneLocked(id, now) {
			out = append(out, wire.ClientConn{Client: id, Addr: e.addr, LastBeat: e.seen.UnixMilli(), Topics: e.topics})
		}
	}
	slices.SortFunc(out, func(a, b wire.ClientConn) int { return strings.Compare(a.Client, b.Client) })
	return out
}

func (c *consumerTable) clientsLocked(group string, now time.Time) []string {
	var out []string
	for id, e := range c.groups[group] {
		if now.Sub(e.seen) <= c.timeout && !c.goneLocked(id, now) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (c *consumerTable) clients(group string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clientsLocked(group, time.Now())
}

func (c *consumerTable) groupNames() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for g := range c.groups {
		out = append(out, g)
	}
	return out
}

// remove drops a consumer and its locks (it left).
func (c *consumerTable) remove(group, client string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.groups[group], client)
	if ss := c.sessions[client]; ss != nil {
		inGroup := false
		for _, m := range c.groups {
			_, in := m[client]
			inGroup = inGroup || in
		}
		if !inGroup {
			for _, stop := range ss.conns {
				stop()
			}
			delete(c.sessions, client)
		}
	}
	for k, l := range c.locks {
		if k.group == group && l.client == client {
			delete(c.locks, k)
		}
	}
}

// expire drops consumers whose heartbeats stopped or whose session was
// lost more than grace ago, and the locks they held.
func (c *consumerTable) expire(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for g, m := range c.groups {
		for id, e := range m {
			if now.Sub(e.seen) > c.timeout || c.goneLocked(id, now) {
				delete(m, id)
			}
		}
		if len(m) == 0 {
			delete(c.groups, g)
		}
	}
	for k, l := range c.locks {
		if now.After(l.expires) || c.goneLocked(l.client, now) {
			delete(c.locks, k)
		}
	}
	for id := range c.sessions {
		if c.goneLocked(id, now) {
			delete(c.sessions, id)
		}
	}
}

// lock takes or renews queue locks; it returns the queues client holds.
func (c *consumerTable) lock(group, client, topic string, queues []uint32, now time.Time) []uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var got []uint32
	for _, q := range queues {
		k := lockKey{group, topic, q}
		l, ok := c.locks[k]
		if ok && l.client != client && now.Before(l.expires) && !c.goneLocked(l.client, now) {
			continue
		}
		c.locks[k] = queueLock{client: client, expires: now.Add(c.lockTTL)}
		got = append(got, q)
	}
	return got
}

func (c *consumerTable) unlock(group, client, topic string, queues []uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range queues {
		k := lockKey{group, topic, q}
		if l, ok := c.locks[k]; ok && l.client == client {
			delete(c.locks, k)
		}
	}
}

// snapshot returns every group's offsets and epoch.
func (t *offsetTable) snapshot() []wire.GroupOffsets {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]wire.GroupOffsets, 0, len(t.m))
	for g, m := range t.m {
		gofs := wire.GroupOffsets{Group: g, Epoch: t.epoch[g]}
		for k, o := range m {
			gofs.Offsets = append(gofs.Offsets, wire.QueueOffset{Topic: k.topic, Queue: k.queue, Offset: o})
		}
		out = append(out, gofs)
	}
	return out
}

// merge folds in another broker's offsets (master and slave exchange
// theirs): a newer epoch (a reset) replaces a group's offsets; within the
// same epoch each queue keeps the larger offset, so consumers that moved
// on at one side never go back at the other.
func (t *offsetTable) merge(gs []wire.GroupOffsets) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, g := range gs {
		cur := t.m[g.Group]
		switch {
		case g.Epoch < t.epoch[g.Group]:
			continue
		case g.Epoch > t.epoch[g.Group] || cur == nil:
			cur = map[qkey]int64{}
			t.m[g.Group] = cur
			t.epoch[g.Group] = g.Epoch
		}
		for _, o := range g.Offsets {
			k := qkey{o.Topic, o.Queue}
			if v, ok := cur[k]; !ok || o.Offset > v {
				cur[k] = o.Offset
				t.dirty = true
			}
		}
	}
}
