package server

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/registry"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/tangram-dev/tangram/rpc/codec"
)

// Replication is AP: every server owns the ephemeral instances registered
// (and renewed) through it, accepts writes for them on its own, and tells
// the others. Servers find each other and detect failures with
// hashicorp/memberlist (SWIM gossip). Each change is gossiped as a delta;
// every PushPullInterval a server exchanges its whole owned set with a
// random peer (anti-entropy), and on (re)joining it sends its set to the
// newcomer at once. A server's set is authoritative for the instances it
// owns, so a deletion made during a partition is not undone when the
// partition heals, and versions (the owner's clock, kept increasing) pick
// the latest write when a client moved between servers. Replicas of a
// server that left (or is cut off) are dropped after RemoveAfter unless a
// client renews them here — then this server takes them over.

// GossipConfig configures replication.
type GossipConfig struct {
	// BindAddr is the gossip listener (TCP and UDP on one port), e.g.
	// "0.0.0.0:7946" or "127.0.0.1:0".
	BindAddr string
	// AdvertiseAddr is the address peers reach this server at (default:
	// BindAddr's, when not a wildcard).
	AdvertiseAddr string
	// Join lists gossip addresses of servers already in the cluster.
	Join []string
	// PushPullInterval is the anti-entropy period (default 10 s).
	PushPullInterval time.Duration
	// Fast uses memberlist's loopback timings (tests).
	Fast bool
	// Transport replaces memberlist's network transport (fault tests).
	Transport memberlist.Transport
	// RejoinInterval is how often a server that has no peers retries the
	// Join addresses, and tries to reach servers it lost to a failure (not
	// to a graceful leave) again (default 5 s; 1 s with Fast). SWIM alone
	// never merges two halves of a cluster once each has declared the
	// other dead; this does, like Consul's retry_join and reconnect.
	RejoinInterval time.Duration
	// ReconnectTimeout is how long a lost server's address is retried
	// (default 72 h).
	ReconnectTimeout time.Duration
}

type tombKey struct {
	k  registry.Key
	id string
}

type tomb struct {
	version int64
	at      time.Time
}

// wire messages
const (
	msgDelta = 1
	msgState = 2
)

type delRef struct {
	Key     registry.Key `msgpack:"k"`
	ID      string       `msgpack:"i"`
	Version int64        `msgpack:"v"`
}

type gossipMsg struct {
	Kind  uint8                `msgpack:"t"`
	Owner string               `msgpack:"o"`
	Stamp int64                `msgpack:"s"` // state: the owner's clock when it was captured
	Puts  []*registry.Instance `msgpack:"p,omitempty"`
	Dels  []delRef             `msgpack:"d,omitempty"`
}

type gossip struct {
	r    *Registry
	mlp  atomic.Pointer[memberlist.Memberlist]
	q    *memberlist.TransmitLimitedQueue
	log  *slog.Logger
	wg   sync.WaitGroup
	mu   sync.Mutex
	done bool
	out  chan outMsg // deltas sent straight to the peers by sendLoop

	// peers mirrors memberlist's member list (this server excluded), kept
	// from its join/leave events. Lock order: the registry's r.mu may be held
	// when taking pmu, and code holding r.mu never calls into memberlist —
	// memberlist calls our delegate (which takes r.mu) with its own locks
	// held, so the reverse order would deadlock.
	pmu   sync.Mutex
	peers map[string]*memberlist.Node
	lost  map[string]lostPeer // failed (not left) servers, by name

	stop chan struct{} // closed by close: ends rejoinLoop
}

type lostPeer struct {
	addr  string
	since time.Time
}

type outMsg struct {
	b        []byte
	reliable bool // over TCP (too big for a datagram)
}

// peerList returns the current peers.
func (g *gossip) peerList() []*memberlist.Node {
	g.pmu.Lock()
	defer g.pmu.Unlock()
	out := make([]*memberlist.Node, 0, len(g.peers))
	for _, n := range g.peers {
		out = append(out, n)
	}
	return out
}

// ml is the memberlist, nil until it is created.
func (g *gossip) ml() *memberlist.Memberlist { return g.mlp.Load() }

type broadcast struct {
	name string
	msg  []byte
}

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*broadcast)
	return ok && ob.name == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

// startGossip joins (or forms) a replication cluster.
func (r *Registry) startGossip(cfg GossipConfig) error {
	host, portStr, err := net.SplitHostPort(cfg.BindAddr)
	if err != nil {
		return fmt.Errorf("registry: gossip address %q: %w", cfg.BindAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("registry: gossip port %q: %w", portStr, err)
	}
	mc := memberlist.DefaultLANConfig()
	if cfg.Fast {
		mc = memberlist.DefaultLocalConfig()
		// A lone server cut off from the rest has nobody to confirm its
		// suspicions, so it waits the maximum: keep that short here.
		mc.SuspicionMaxTimeoutMult = 2
	}
	mc.Name = r.cfg.NodeName
	mc.BindAddr, mc.BindPort = host, port
	if host == "" {
		mc.BindAddr = "0.0.0.0"
	}
	if cfg.AdvertiseAddr != "" {
		ah, ap, err := net.SplitHostPort(cfg.AdvertiseAddr)
		if err != nil {
			return fmt.Errorf("registry: gossip advertise address %q: %w", cfg.AdvertiseAddr, err)
		}
		mc.AdvertiseAddr = ah
		mc.AdvertisePort, _ = strconv.Atoi(ap)
	}
	if cfg.PushPullInterval > 0 {
		mc.PushPullInterval = cfg.PushPullInterval
	} else if !cfg.Fast {
		mc.PushPullInterval = 10 * time.Second
	}
	g := &gossip{r: r, log: r.log.With("part", "gossip"), out: make(chan outMsg, 4096),
		peers: map[string]*memberlist.Node{}, lost: map[string]lostPeer{}, stop: make(chan struct{})}
	if cfg.Transport != nil {
		mc.Transport = cfg.Transport
	}
	mc.Delegate = g
	mc.Events = g
	mc.Logger = log.New(slogWriter{g.log}, "", 0)
	g.q = &memberlist.TransmitLimitedQueue{NumNodes: func() int {
		g.pmu.Lock()
		defer g.pmu.Unlock()
		return len(g.peers) + 1
	}, RetransmitMult: mc.RetransmitMult}
	r.mu.Lock()
	r.gossip = g // deltas queue from now on
	r.mu.Unlock()
	ml, err := memberlist.Create(mc)
	if err != nil {
		r.mu.Lock()
		r.gossip = nil
		r.mu.Unlock()
		return fmt.Errorf("registry: gossip: %w", err)
	}
	g.mlp.Store(ml)
	g.wg.Add(1)
	go g.sendLoop()
	if len(cfg.Join) > 0 {
		if n, err := ml.Join(cfg.Join); err != nil {
			// AP: a server that cannot reach its peers still serves, and
			// rejoinLoop keeps trying.
			g.log.Warn("registry: could not join the cluster yet; serving alone and retrying", "join", cfg.Join, "err", err)
		} else {
			g.log.Info("registry: joined the cluster", "contacted", n, "members", ml.NumMembers())
		}
	}
	every, keep := cfg.RejoinInterval, cfg.ReconnectTimeout
	if every <= 0 {
		every = 5 * time.Second
		if cfg.Fast {
			every = time.Second
		}
	}
	if keep <= 0 {
		keep = 72 * time.Hour
	}
	g.wg.Add(1)
	go g.rejoinLoop(cfg.Join, every, keep)
	return nil
}

// rejoinLoop retries the Join addresses while this server has no peers, and
// the addresses of servers lost to a failure until they are back or
// ReconnectTimeout passes.
func (g *gossip) rejoinLoop(join []string, every, keep time.Duration) {
	defer g.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		var addrs []string
		g.pmu.Lock()
		alone := len(g.peers) == 0
		for name, lp := range g.lost {
			if now.Sub(lp.since) > keep {
				g.log.Warn("registry: giving up on a lost server", "node", name, "addr", lp.addr, "after", keep)
				delete(g.lost, name)
				continue
			}
			addrs = append(addrs, lp.addr)
		}
		g.pmu.Unlock()
		if alone {
			addrs = append(addrs, join...)
		}
		if len(addrs) == 0 {
			continue
		}
		if n, err := g.ml().Join(addrs); n > 0 {
			g.log.Info("registry: rejoined", "contacted", n, "tried", addrs)
		} else {
			g.log.Debug("registry: rejoin found nobody", "tried", addrs, "err", err)
		}
	}
}

// GossipAddr is the gossip listener's advertised address ("" without gossip).
func (r *Registry) GossipAddr() string {
	if r.gossip == nil || r.gossip.ml() == nil {
		return ""
	}
	n := r.gossip.ml().LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}

// Members lists the live servers of the cluster (just this one without
// gossip).
func (r *Registry) Members() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.membersLocked()
}

// Join adds peers to the cluster after start (tests, operators).
func (r *Registry) Join(addrs ...string) error {
	if r.gossip == nil {
		return fmt.Errorf("registry: gossip is off")
	}
	_, err := r.gossip.ml().Join(addrs)
	return err
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(string(p))
	return len(p), nil
}

// queue gossips one change of an instance this server holds.
func (g *gossip) queue(typ string, in *registry.Instance) {
	m := gossipMsg{Kind: msgDelta, Owner: g.r.cfg.NodeName}
	if typ == registry.EventDelete {
		m.Dels = []delRef{{Key: in.Key, ID: in.ID, Version: in.Version}}
	} else {
		m.Puts = []*registry.Instance{in}
	}
	b, err := msgpack.Marshal(&m)
	if err != nil {
		g.log.Error("registry: encoding a gossip delta", "err", err)
		return
	}
	m2 := outMsg{b: b, reliable: len(b) > 1000}
	if !m2.reliable {
		g.q.QueueBroadcast(&broadcast{name: in.Key.String() + "/" + in.ID, msg: b})
	}
	// Also send it to every peer at once (small clusters; big deltas always):
	// gossip rounds add up to a few hundred milliseconds, a datagram to each
	// peer costs microseconds. The queued copy still covers a lost datagram.
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return
	}
	select {
	case g.out <- m2:
	default:
		g.log.Warn("registry: gossip backlog full; the change reaches peers by gossip or the next anti-entropy round")
	}
}

// sendLoop sends deltas straight to the peers; it runs outside the
// registry's lock, as memberlist calls must.
func (g *gossip) sendLoop() {
	defer g.wg.Done()
	for m := range g.out {
		ml := g.ml()
		peers := g.peerList()
		if !m.reliable && len(peers) > 15 {
			continue // large cluster: gossip alone spreads it
		}
		for _, n := range peers {
			var err error
			if m.reliable {
				err = ml.SendReliable(n, m.b)
			} else {
				err = ml.SendBestEffort(n, m.b)
			}
			if err != nil {
				g.log.Debug("registry: sending a delta", "to", n.Name, "err", err)
			}
		}
	}
}

func (g *gossip) close(leave time.Duration) {
	// r.mu orders this against queue (called under it); it is released
	// before memberlist is told anything (see pmu's lock order).
	g.r.mu.Lock()
	g.mu.Lock()
	done := g.done
	if !done {
		g.done = true
		close(g.out)
		close(g.stop)
	}
	g.mu.Unlock()
	g.r.mu.Unlock()
	if done {
		return
	}
	if ml := g.ml(); ml != nil {
		_ = ml.Leave(leave)
		_ = ml.Shutdown()
	}
	g.wg.Wait()
}

// memberlist.Delegate

func (g *gossip) NodeMeta(limit int) []byte { return nil }

func (g *gossip) NotifyMsg(b []byte) {
	var m gossipMsg
	if err := codec.Msgpack.Unmarshal(b, &m); err != nil {
		g.log.Warn("registry: undecodable gossip message dropped", "err", err, "bytes", len(b))
		return
	}
	g.r.applyRemote(&m)
}

func (g *gossip) GetBroadcasts(overhead, limit int) [][]byte {
	return g.q.GetBroadcasts(overhead, limit)
}

func (g *gossip) LocalState(join bool) []byte {
	b, err := msgpack.Marshal(g.r.ownedState())
	if err != nil {
		g.log.Error("registry: encoding the owned state", "err", err)
		return nil
	}
	return b
}

func (g *gossip) MergeRemoteState(buf []byte, join bool) {
	g.NotifyMsg(buf)
}

// memberlist.EventDelegate

func (g *gossip) NotifyJoin(n *memberlist.Node) {
	if n.Name == g.r.cfg.NodeName {
		return
	}
	g.pmu.Lock()
	g.peers[n.Name] = n
	delete(g.lost, n.Name)
	g.pmu.Unlock()
	g.r.mu.Lock()
	delete(g.r.orphaned, n.Name)
	g.r.mu.Unlock()
	g.log.Info("registry: server joined", "node", n.Name, "addr", n.Address())
	// Send our set at once rather than waiting for anti-entropy.
	b := g.LocalState(false)
	g.mu.Lock()
	done := g.done
	if !done {
		g.wg.Add(1)
	}
	g.mu.Unlock()
	if done {
		return
	}
	go func() {
		defer g.wg.Done()
		if err := g.ml().SendReliable(n, b); err != nil {
			g.log.Debug("registry: sending state to a new member", "node", n.Name, "err", err)
		}
	}()
}

func (g *gossip) NotifyLeave(n *memberlist.Node) {
	if n.Name == g.r.cfg.NodeName {
		return
	}
	g.log.Warn("registry: server left or unreachable; its instances go unless renewed here", "node", n.Name, "after", g.r.cfg.RemoveAfter)
	g.pmu.Lock()
	delete(g.peers, n.Name)
	if n.State != memberlist.StateLeft {
		g.lost[n.Name] = lostPeer{addr: n.Address(), since: time.Now()}
	}
	g.pmu.Unlock()
	g.r.mu.Lock()
	if _, ok := g.r.orphaned[n.Name]; !ok {
		g.r.orphaned[n.Name] = g.r.now()
	}
	g.r.mu.Unlock()
}

func (g *gossip) NotifyUpdate(n *memberlist.Node) {}

var _ io.Writer = slogWriter{}

// ownedState captures the ephemeral instances this server owns.
func (r *Registry) ownedState() *gossipMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := &gossipMsg{Kind: msgState, Owner: r.cfg.NodeName, Stamp: r.version()}
	for _, s := range r.services {
		for _, in := range s.instances.all() {
			if in.Ephemeral && in.Owner == r.cfg.NodeName {
				m.Puts = append(m.Puts, in)
			}
		}
	}
	return m
}

// applyRemote folds another server's delta or state into ours.
func (r *Registry) applyRemote(m *gossipMsg) {
	if m.Owner == r.cfg.NodeName {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.Stamp > r.lastVer {
		r.lastVer = m.Stamp // keep our versions after what we have seen
	}
	inState := map[tombKey]bool{}
	for _, in := range m.Puts {
		if in == nil || in.Normalize() != nil || !in.Ephemeral {
			continue
		}
		tk := tombKey{in.Key, in.ID}
		inState[tk] = true
		if t, ok := r.tombs[tk]; ok && t.version >= in.Version {
			continue
		}
		if in.Version > r.lastVer {
			r.lastVer = in.Version
		}
		s := r.svc(in.Key, true)
		cur := s.instances.get(in.ID)
		if cur != nil && cur.Version >= in.Version {
			continue
		}
		c := in.Clone()
		r.intern(s, c)
		s.instances.put(in.ID, c)
		s.instances.setBeat(in.ID, now.UnixMilli())
		if cur == nil || changed(cur, c) {
			r.record(in.Key, s, registry.EventPut, c)
		}
	}
	for _, d := range m.Dels {
		d.Key.Fill()
		tk := tombKey{d.Key, d.ID}
		if t := r.tombs[tk]; t.version < d.Version {
			r.tombs[tk] = tomb{version: d.Version, at: now}
		}
		s := r.svc(d.Key, false)
		if s == nil {
			continue
		}
		if cur := s.instances.get(d.ID); cur != nil && cur.Version <= d.Version {
			s.instances.del(d.ID)
			r.record(d.Key, s, registry.EventDelete, cur)
		}
	}
	if m.Kind == msgState {
		// The owner's full set: its instances we hold that it no longer
		// has (and that are older than the capture) were deleted there.
		for k, s := range r.services {
			for id, in := range s.instances.all() {
				if in.Ephemeral && in.Owner == m.Owner && !inState[tombKey{k, id}] && in.Version < m.Stamp {
					s.instances.del(id)
					r.tombs[tombKey{k, id}] = tomb{version: in.Version, at: now}
					r.record(k, s, registry.EventDelete, in)
				}
			}
		}
		delete(r.orphaned, m.Owner)
	}
}
