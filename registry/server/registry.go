package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/registry"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tangram-dev/tangram/internal/store"
)

// Config configures a Registry. Zero values take the documented defaults.
type Config struct {
	// Store keeps persistent instances; without it only ephemeral
	// instances can be registered.
	Store  *store.Store
	Logger *slog.Logger
	// Registerer receives the registry's metrics (optional).
	Registerer prometheus.Registerer
	// NodeName names this server as the owner of the instances registered
	// through it. Default: hostname:pid.
	NodeName string
	// HeartbeatInterval is how often clients renew (5 s); an ephemeral
	// instance turns unhealthy after UnhealthyAfter (15 s) without a renewal
	// and is removed after RemoveAfter (30 s).
	HeartbeatInterval time.Duration
	UnhealthyAfter    time.Duration
	RemoveAfter       time.Duration
	// DisableSelfPreservation turns off Eureka's self-preservation (on by
	// default): when the renewals of the last PreservationWindow (60 s) fall
	// below PreservationThreshold (0.85) of those expected, the registry
	// assumes a network fault, not mass death, and stops removing instances —
	// but never keeps an instance more than PreservationMax (3 min) past its
	// last renewal. It applies only with at least PreservationMinInstances
	// (10) ephemeral instances: a handful dying is not a pattern.
	DisableSelfPreservation  bool
	PreservationWindow       time.Duration
	PreservationThreshold    float64
	PreservationMax          time.Duration
	PreservationMinInstances int
	// ProbeInterval and ProbeTimeout govern health probes of persistent
	// instances (5 s, 2 s); ReloadInterval how often persistent instances
	// written by other servers are read from the store (2 s).
	ProbeInterval  time.Duration
	ProbeTimeout   time.Duration
	ReloadInterval time.Duration
	// LogSize is how many changes per service are kept for watchers that
	// resume from a revision (256); older watchers get a full list.
	LogSize int
	// Gossip, when its BindAddr is set, replicates ephemeral instances with
	// the other servers of a cluster (hashicorp/memberlist); without it the
	// registry runs alone.
	Gossip GossipConfig
}

// DefaultConfig returns the defaults (NodeName: hostname:pid).
func DefaultConfig() Config {
	h, _ := os.Hostname()
	c := Config{Logger: slog.Default(), NodeName: fmt.Sprintf("%s:%d", h, os.Getpid()),
		HeartbeatInterval: 5 * time.Second, PreservationWindow: time.Minute, PreservationMax: 3 * time.Minute,
		ProbeInterval: 5 * time.Second, ProbeTimeout: 2 * time.Second, ReloadInterval: 2 * time.Second,
		PreservationThreshold: 0.85, PreservationMinInstances: 10, LogSize: 256}
	c.UnhealthyAfter, c.RemoveAfter = 3*c.HeartbeatInterval, 6*c.HeartbeatInterval
	return c
}

// Validate checks c; it changes nothing (New fills the defaults).
func (c Config) Validate() error {
	if c.UnhealthyAfter > c.RemoveAfter {
		return fmt.Errorf("registry: UnhealthyAfter %v exceeds RemoveAfter %v", c.UnhealthyAfter, c.RemoveAfter)
	}
	if c.PreservationThreshold > 1 {
		return fmt.Errorf("registry: PreservationThreshold %v: want a fraction of 1 or less", c.PreservationThreshold)
	}
	return nil
}

// withDefaults returns c with its zero fields set from DefaultConfig
// (UnhealthyAfter and RemoveAfter follow HeartbeatInterval).
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	def := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.NodeName == "" {
		c.NodeName = d.NodeName
	}
	def(&c.HeartbeatInterval, d.HeartbeatInterval)
	def(&c.UnhealthyAfter, 3*c.HeartbeatInterval)
	def(&c.RemoveAfter, 6*c.HeartbeatInterval)
	def(&c.PreservationWindow, d.PreservationWindow)
	def(&c.PreservationMax, d.PreservationMax)
	def(&c.ProbeInterval, d.ProbeInterval)
	def(&c.ProbeTimeout, d.ProbeTimeout)
	def(&c.ReloadInterval, d.ReloadInterval)
	if c.PreservationThreshold <= 0 {
		c.PreservationThreshold = d.PreservationThreshold
	}
	if c.PreservationMinInstances <= 0 {
		c.PreservationMinInstances = d.PreservationMinInstances
	}
	if c.LogSize <= 0 {
		c.LogSize = d.LogSize
	}
	return c
}

// Registry holds services and their instances in memory: ephemeral ones
// live by heartbeats, persistent ones are also kept in the SQL store and
// probed. Watchers are told of every change.
type Registry struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	mu       sync.RWMutex
	services map[registry.Key]*service
	rev      int64
	lastVer  int64
	renews   []int64 // per-second renewal counts, a ring over the window
	renewSec int64   // unix second of the newest bucket
	preserve bool
	// ownedEphemeral is how many ephemeral instances this server owned at
	// the end of the last expiry sweep.
	ownedEphemeral int64

	watchers atomic.Int64
	metrics  *metrics
	gossip   *gossip                      // nil without replication
	orphaned map[string]time.Time         // owners that left the cluster, since when
	tombs    map[tombKey]tomb             // recent deletions, against late older puts
	owners   map[string]string            // interned owner names
	streaks  map[tombKey]int              // probes in a row disagreeing with an instance's health
	flaps    map[tombKey][]int64          // recent unhealthy transitions (unix ms) of ephemeral instances
	dirty    map[registry.Key]struct{}    // services changed since the fan-out loop last ran
	hub      chan struct{}                // wakes the fan-out loop
	metas    map[string]map[string]string // interned metadata maps, by content
	stop     chan struct{}
	ctx      context.Context // canceled by Close
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closed   atomic.Bool
	starting atomic.Bool
	started  time.Time
}

// service holds one service's instances. Stored *Instance values are never
// modified: a change stores a new one, so snapshots, change logs and gossip
// share them without copying.
type service struct {
	key       registry.Key // the canonical strings every instance shares
	instances instMap
	rev       int64    // revision of the last change
	log       []change // changes, oldest first
	floor     int64    // revisions <= floor are no longer in log
	changed   chan struct{}
	emptied   bool
	node      string
	dmu       sync.Mutex // guards lastDelta (read-locked callers share it)
	lastDelta *deltaCache
	pushers   map[*pusher]struct{} // watch streams served by the fan-out loop
}

// New returns a registry; Start begins its background work.
func New(cfg Config) (*Registry, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &Registry{
		cfg: cfg, log: cfg.Logger, now: time.Now,
		services: map[registry.Key]*service{},
		rev:      1, // 0 means "no revision" to Watch
		orphaned: map[string]time.Time{},
		owners:   map[string]string{},
		streaks:  map[tombKey]int{},
		flaps:    map[tombKey][]int64{},
		dirty:    map[registry.Key]struct{}{},
		hub:      make(chan struct{}, 1),
		metas:    map[string]map[string]string{},
		tombs:    map[tombKey]tomb{},
		renews:   make([]int64, int(max(cfg.PreservationWindow/time.Second, 1))),
		stop:     make(chan struct{}),
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.metrics = newMetrics(r)
	if cfg.Registerer != nil {
		if err := r.metrics.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// ErrServerClosed is returned by Start after Close.
var ErrServerClosed = errors.New("registry: server closed")

// Start loads persistent instances, starts the expiry, probe and reload
// loops and, with Config.Gossip, joins the replication cluster. It returns
// once they run; they run until Shutdown or Close, not until ctx ends.
func (r *Registry) Start(ctx context.Context) error {
	if r.closed.Load() {
		return ErrServerClosed
	}
	if !r.starting.CompareAndSwap(false, true) {
		return errors.New("registry: already started")
	}
	r.started = r.now()
	if r.cfg.Store != nil {
		if err := r.reload(ctx); err != nil {
			return err
		}
		r.goFunc(func() { r.every(r.cfg.ReloadInterval, r.reloadOnce) })
		r.goFunc(func() { r.every(r.cfg.ProbeInterval, r.probeAll) })
	}
	r.goFunc(func() { r.every(max(min(r.cfg.HeartbeatInterval/5, time.Second), 10*time.Millisecond), r.expire) })
	r.goFunc(r.fanOut)
	if r.cfg.Gossip.BindAddr != "" {
		if err := r.startGossip(r.cfg.Gossip); err != nil {
			return err
		}
	}
	return nil
}

func (r *Registry) goFunc(f func()) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		f()
	}()
}

// Shutdown stops like Close, with the leave from the gossip cluster (which
// tells peers at once that this server's instances have lost their owner,
// rather than after a failure timeout) bounded by ctx.
func (r *Registry) Shutdown(ctx context.Context) error {
	leave := time.Second
	if dl, ok := ctx.Deadline(); ok {
		leave = min(leave, max(time.Until(dl), 0))
	}
	r.halt(leave)
	return nil
}

// Close stops the background loops and gossip (leaving the cluster within
// a second); watchers are released. Every call returns once the loops have
// stopped.
func (r *Registry) Close() error {
	r.halt(time.Second)
	return nil
}

func (r *Registry) halt(leave time.Duration) {
	if r.closed.CompareAndSwap(false, true) {
		close(r.stop)
		r.cancel()
		r.mu.RLock()
		g := r.gossip
		r.mu.RUnlock()
		if g != nil {
			g.close(leave)
		}
	}
	r.wg.Wait()
}

// Node is this server's owner name.
func (r *Registry) Node() string { return r.cfg.NodeName }

func (r *Registry) svc(k registry.Key, create bool) *service {
	s := r.services[k]
	if s == nil && create {
		s = &service{key: k, node: r.cfg.NodeName, instances: instMap{m: map[string]slot{}}, changed: make(chan struct{})}
		r.services[k] = s
	}
	return s
}

// version returns a new instance version: wall-clock microseconds, kept
// increasing, so the latest write wins across servers.
func (r *Registry) version() int64 {
	v := r.now().UnixMicro()
	if v <= r.lastVer {
		v = r.lastVer + 1
	}
	r.lastVer = v
	return v
}

// Register adds or replaces an instance (idempotent by ID) owned by this
// server, and returns it as stored.
func (r *Registry) Register(ctx context.Context, in registry.Instance) (*registry.Instance, error) {
	if err := in.Normalize(); err != nil {
		return nil, err
	}
	if !in.Ephemeral && r.cfg.Store == nil {
		return nil, fmt.Errorf("%w: persistent instances need a store", registry.ErrInvalid)
	}
	now := r.now()
	r.mu.Lock()
	s := r.svc(in.Key, true)
	old := s.instances.get(in.ID)
	stored := in.Clone()
	r.intern(s, stored)
	stored.Owner = r.cfg.NodeName
	stored.RegisteredAt = now.UnixMilli()
	if old != nil {
		stored.RegisteredAt = old.RegisteredAt
	}
	if stored.Ephemeral {
		stored.Healthy = true
	} else if old != nil {
		stored.Healthy = old.Healthy
	} else {
		stored.Healthy = true // until the first probe says otherwise
	}
	stored.Version = r.version()
	r.mu.Unlock()
	if !stored.Ephemeral {
		if err := r.savePersistent(ctx, stored); err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s = r.svc(in.Key, true)
	if cur := s.instances.get(in.ID); cur != nil && cur.Version > stored.Version {
		return cur, nil // a newer write won meanwhile
	}
	s.instances.put(in.ID, stored)
	if stored.Ephemeral {
		s.instances.setBeat(in.ID, now.UnixMilli())
	}
	r.countRenewal(now)
	if old == nil || changed(old, stored) {
		r.emit(in.Key, s, registry.EventPut, stored)
	}
	return stored, nil
}

// intern makes in share the service's name strings, the owner name and an
// identical metadata map already stored, so a hundred thousand instances
// do not hold a hundred thousand copies of each.
func (r *Registry) intern(s *service, in *registry.Instance) {
	in.Key = s.key
	if o, ok := r.owners[in.Owner]; ok {
		in.Owner = o
	} else if len(r.owners) < 4096 {
		r.owners[in.Owner] = in.Owner
	}
	if len(in.Metadata) == 0 {
		in.Metadata = nil
		return
	}
	keys := make([]string, 0, len(in.Metadata))
	for k := range in.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(in.Metadata[k])
		b.WriteByte(0)
	}
	if m, ok := r.metas[b.String()]; ok {
		in.Metadata = m
		return
	}
	if len(r.metas) >= 16384 {
		clear(r.metas) // a cache, not a registry of its own: start over
	}
	r.metas[b.String()] = in.Metadata
}

// minLog is the fewest changes a service's log keeps.
const minLog = 16

// flapping reports whether an instance turned unhealthy three times or more
// in the last two minutes.
func (r *Registry) flapping(k registry.Key, id string, now time.Time) bool {
	tk := tombKey{k, id}
	ts := r.flaps[tk]
	cut := now.Add(-2 * time.Minute).UnixMilli()
	for len(ts) > 0 && ts[0] < cut {
		ts = ts[1:]
	}
	if len(ts) == 0 {
		delete(r.flaps, tk)
		return false
	}
	r.flaps[tk] = ts
	return len(ts) >= 3
}

// changed reports whether a watcher would see a difference.
func changed(a, b *registry.Instance) bool {
	if a.Host != b.Host || a.Port != b.Port || a.Weight != b.Weight || a.Zone != b.Zone || a.Cluster != b.Cluster ||
		a.Healthy != b.Healthy || a.Enabled != b.Enabled || a.Ephemeral != b.Ephemeral || len(a.Metadata) != len(b.Metadata) {
		return true
	}
	for k, v := range a.Metadata {
		if b.Metadata[k] != v {
			return true
		}
	}
	return false
}

// Heartbeat renews an ephemeral instance. ErrNotFound tells the client to
// register again (this server restarted, or the instance expired).
func (r *Registry) Heartbeat(ctx context.Context, k registry.Key, id string) error {
	k.Fill()
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.svc(k, false)
	var in *registry.Instance
	if s != nil {
		in = s.instances.get(id)
	}
	if in == nil || !in.Ephemeral {
		return fmt.Errorf("%w: instance %s of %s (register it again)", registry.ErrNotFound, id, k)
	}
	r.countRenewal(now)
	prev := s.instances.beat(id)
	s.instances.setBeat(id, now.UnixMilli())
	if !in.Healthy && r.flapping(k, id, now) && now.UnixMilli()-prev > int64(r.cfg.HeartbeatInterval/time.Millisecond)*2 {
		// A flapping instance must renew twice in a row (within two
		// intervals) before it takes traffic again.
		return nil
	}
	if moved := in.Owner != r.cfg.NodeName; moved || !in.Healthy {
		// Back to health, or the client moved here: take the instance over.
		c := in.Clone()
		c.Owner, c.Healthy, c.Version = r.cfg.NodeName, true, r.version()
		s.instances.put(id, c)
		r.emit(k, s, registry.EventPut, c)
	}
	return nil
}

// Deregister removes an instance.
func (r *Registry) Deregister(ctx context.Context, k registry.Key, id string) error {
	k.Fill()
	r.mu.RLock()
	var in *registry.Instance
	if s := r.svc(k, false); s != nil {
		in = s.instances.get(id)
	}
	r.mu.RUnlock()
	if in == nil {
		return fmt.Errorf("%w: instance %s of %s", registry.ErrNotFound, id, k)
	}
	if !in.Ephemeral {
		if err := r.deletePersistent(ctx, k, id); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removeLocked(k, id)
	return nil
}

func (r *Registry) removeLocked(k registry.Key, id string) *registry.Instance {
	s := r.svc(k, false)
	if s == nil {
		return nil
	}
	in := s.instances.get(id)
	if in == nil {
		return nil
	}
	s.instances.del(id)
	r.emit(k, s, registry.EventDelete, in)
	return in
}

// Update applies an operator's patch (weight, enable/drain, metadata).
func (r *Registry) Update(ctx context.Context, k registry.Key, id string, p registry.Patch) (*registry.Instance, error) {
	k.Fill()
	r.mu.RLock()
	var cur *registry.Instance
	if s := r.svc(k, false); s != nil {
		if in := s.instances.get(id); in != nil {
			cur = in.Clone()
		}
	}
	r.mu.RUnlock()
	if cur == nil {
		return nil, fmt.Errorf("%w: instance %s of %s", registry.ErrNotFound, id, k)
	}
	if p.Weight != nil {
		if *p.Weight < 0 || *p.Weight > registry.MaxWeight {
			return nil, fmt.Errorf("%w weight %d: want 0–%d", registry.ErrInvalid, *p.Weight, registry.MaxWeight)
		}
		cur.Weight = uint16(*p.Weight)
	}
	if p.Enabled != nil {
		cur.Enabled = *p.Enabled
	}
	if p.Metadata != nil {
		cur.Metadata = p.Metadata
	}
	if err := cur.Normalize(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	cur.Version = r.version()
	r.mu.Unlock()
	if !cur.Ephemeral {
		if err := r.savePersistent(ctx, cur); err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.svc(k, true)
	in := s.instances.get(id)
	if in == nil {
		return nil, fmt.Errorf("%w: instance %s of %s", registry.ErrNotFound, id, k)
	}
	c := in.Clone()
	c.Weight, c.Enabled, c.Metadata, c.Version = cur.Weight, cur.Enabled, cur.Metadata, cur.Version
	r.intern(s, c)
	s.instances.put(id, c)
	r.emit(k, s, registry.EventPut, c)
	return c, nil
}

// Get returns the full list of a service.
func (r *Registry) Get(k registry.Key) registry.Snapshot {
	k.Fill()
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.snapshotLocked(k, r.svc(k, false))
}

func (r *Registry) snapshotLocked(k registry.Key, s *service) registry.Snapshot {
	// The registry-wide revision: every later change of this service has
	// a higher one, so a watcher can resume from it.
	snap := registry.Snapshot{Key: k, Full: true, Instances: []*registry.Instance{}, Revision: r.rev, Node: r.cfg.NodeName}
	if s == nil {
		return snap
	}
	snap.Emptied = s.emptied && s.instances.len() == 0
	for _, in := range s.instances.all() {
		snap.Instances = append(snap.Instances, in)
	}
	sort.Slice(snap.Instances, func(i, j int) bool { return snap.Instances[i].ID < snap.Instances[j].ID })
	return snap
}

// Watch returns the changes of a service after revision rev: at once when
// there are some, else when the next one happens or ctx ends (then with no
// changes and the same revision). rev 0, or a revision older than the
// change log, gets the full list.
func (r *Registry) Watch(ctx context.Context, k registry.Key, rev int64) (registry.Snapshot, error) {
	k.Fill()
	if err := k.Validate(); err != nil {
		return registry.Snapshot{}, err
	}
	r.watchers.Add(1)
	defer r.watchers.Add(-1)
	for {
		r.mu.RLock()
		s := r.svc(k, false)
		if s == nil {
			r.mu.RUnlock()
			r.mu.Lock()
			r.svc(k, true)
			r.mu.Unlock()
			continue
		}
		if rev <= 0 || rev < s.floor || rev > r.rev {
			snap := r.snapshotLocked(k, s)
			r.mu.RUnlock()
			return snap, nil
		}
		if s.rev > rev {
			snap := s.delta(rev)
			r.mu.RUnlock()
			return *snap, nil
		}
		ch := s.changed
		r.mu.RUnlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return registry.Snapshot{Key: k, Revision: rev, Node: r.cfg.NodeName}, nil
		case <-r.stop:
			return registry.Snapshot{Key: k, Revision: rev, Node: r.cfg.NodeName}, errors.New("registry: closed")
		}
	}
}

// Namespaces lists the namespaces that hold at least one service.
func (r *Registry) Namespaces() []string {
	r.mu.RLock()
	seen := map[string]bool{}
	for k := range r.services {
		seen[k.Namespace] = true
	}
	r.mu.RUnlock()
	out := make([]string, 0, len(seen))
	for ns := range seen {
		out = append(out, ns)
	}
	sort.Strings(out)
	return out
}

// Services lists the services of a namespace ("" for all) that have
// instances.
func (r *Registry) Services(namespace string) []registry.ServiceInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []registry.ServiceInfo
	for k, s := range r.services {
		if (namespace != "" && k.Namespace != namespace) || s.instances.len() == 0 {
			continue
		}
		si := registry.ServiceInfo{Key: k, Instances: s.instances.len(), Revision: s.rev}
		for _, in := range s.instances.all() {
			if in.Healthy && in.Enabled {
				si.Healthy++
			}
		}
		out = append(out, si)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key.String() < out[j].Key.String() })
	return out
}

func (r *Registry) membersLocked() []string {
	out := []string{r.cfg.NodeName}
	if g := r.gossip; g != nil {
		for _, n := range g.peerList() { // not memberlist itself: see gossip.pmu
			out = append(out, n.Name)
		}
	}
	sort.Strings(out)
	return out
}

// Status reports counts and the self-preservation state.
func (r *Registry) Status() registry.Status {
	r.mu.RLock()
	defer r.mu.RUnlock()
	st := registry.Status{Node: r.cfg.NodeName, SelfPreservation: r.preserve, Watchers: r.watchers.Load()}
	for _, s := range r.services {
		if s.instances.len() > 0 {
			st.Services++
		}
		st.Instances += s.instances.len()
		for _, in := range s.instances.all() {
			if in.Ephemeral {
				st.Ephemeral++
			}
		}
	}
	st.Renewals, st.ExpectedRenewals = r.renewalsLocked(r.now()), r.expectedLocked()
	st.Members = r.membersLocked()
	return st
}
