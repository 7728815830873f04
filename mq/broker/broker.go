// Package broker is the message queue's broker (`tangram broker`, and
// in-process under `tangram server`): it keeps topics in a storage engine
// (package mq/store), serves producers and consumers over Tangram RPC,
// keeps consumer groups' offsets and membership, delivers delayed and
// retried messages, resolves transactional half messages, and registers
// its topics with the name service.
package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/durable"
	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// DefaultDelayLevels returns RocketMQ's 18 delay levels, 1 s … 2 h.
func DefaultDelayLevels() []time.Duration {
	return []time.Duration{time.Second, 5 * time.Second, 10 * time.Second, 30 * time.Second,
		time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute, 5 * time.Minute, 6 * time.Minute,
		7 * time.Minute, 8 * time.Minute, 9 * time.Minute, 10 * time.Minute, 20 * time.Minute, 30 * time.Minute,
		time.Hour, 2 * time.Hour}
}

// Config configures a broker.
type Config struct {
	// Name identifies the broker (in message IDs and routes). Required.
	Name string
	// Dir holds the store and the broker's state files. Required.
	Dir string
	// Store settings: segment size, flush policy, retention (see
	// store.Config). Dir, Protect and Logger are filled in.
	Store store.Config
	// MaxBody bounds a message body (default 4 MiB).
	MaxBody int
	// AutoCreate creates unknown topics on first send with DefaultQueues
	// queues (default 4).
	AutoCreate    bool
	DefaultQueues int
	// DelayLevels are the delays of levels 1…n (default RocketMQ's 18,
	// 1 s … 2 h). Retries use level 3 + times reconsumed.
	DelayLevels []time.Duration
	// ConsumerTimeout drops a consumer whose heartbeats stop (default 30 s);
	// SessionGrace drops one at once when its connections have closed and
	// it has not come back within the grace (default 4 s: longer than a
	// consumer's heartbeat interval, so a reconnecting consumer keeps its
	// queues) — a killed ordered consumer's queues move in seconds; LockTTL
	// is how long an ordered-consumption queue lock lasts unrenewed when
	// its consumer is cut off without its connection being seen to close
	// (default 60 s).
	ConsumerTimeout time.Duration
	SessionGrace    time.Duration
	LockTTL         time.Duration
	// Transaction check-back: a half message unresolved after TxCheckAfter
	// (default 6 s) is checked with its producer group every TxCheckInterval
	// (default 30 s), at most TxMaxChecks times (default 15), then rolled
	// back.
	TxCheckAfter    time.Duration
	TxCheckInterval time.Duration
	TxMaxChecks     int
	// MaxInFlightBytes bounds the bytes of sends being stored at once; above
	// it sends are refused with a retriable "broker busy" (default 256 MiB).
	MaxInFlightBytes int64
	// BusyAfter: when storing a send has taken longer than this, the disk or
	// page cache is saturated and new sends are refused as busy (default 1 s).
	BusyAfter time.Duration
	// Authenticate resolves a client's API token. Required.
	Authenticate func(ctx context.Context, token string) (*auth.Principal, error)
	// Register publishes the broker's topics to the name service; called
	// every RegisterInterval (default 10 s) and after topic changes.
	Register         func(ctx context.Context, info wire.BrokerInfo) error
	RegisterInterval time.Duration
	// Audit records the broker's administrative changes — a topic created
	// or deleted, a group's offsets reset, a dead letter resent — in the
	// platform's audit log (the in-process broker writes it directly;
	// Remote's sends it to the servers). Nil: they are logged only.
	Audit func(ctx context.Context, e auth.AuditRequest) error
	// Master, when set, makes this broker a slave of the broker at that
	// address (same Name): it replicates the master's commitlog, topics and
	// offsets, serves reads while the master is down, and refuses writes.
	// Token authenticates it to the master (admin).
	Master string
	Token  string
	// SyncReplicas makes a master acknowledge a send only once a slave has
	// stored it (ReplicaTimeout, default 3 s); without a slave in sync,
	// sends fail as busy (the message stays on the master).
	SyncReplicas   bool
	ReplicaTimeout time.Duration
	// Addr is the listener Start opens (default ":7072"; "127.0.0.1:0"
	// picks a port). Advertise is the address clients dial (default: the
	// listener's; for a listener on every interface, ":7072", this host's
	// first non-loopback IPv4 address, as RocketMQ's brokerIP1 — not
	// "[::]:7072", which no other host can dial).
	Addr      string
	Advertise string
	Logger    *slog.Logger
}

// DefaultConfig returns the defaults (Name, Dir and Authenticate unset).
func DefaultConfig() Config {
	return Config{Addr: ":7072", MaxBody: wire.DefaultMaxBody, DefaultQueues: wire.DefaultQueues,
		DelayLevels: DefaultDelayLevels(), ConsumerTimeout: 30 * time.Second, SessionGrace: 4 * time.Second, LockTTL: 60 * time.Second,
		TxCheckAfter: 6 * time.Second, TxCheckInterval: 30 * time.Second, TxMaxChecks: 15,
		MaxInFlightBytes: 256 << 20, BusyAfter: time.Second, ReplicaTimeout: 3 * time.Second,
		RegisterInterval: 10 * time.Second, Logger: slog.Default()}
}

// withDefaults returns c with its zero fields set from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	pos := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	dur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	pos(&c.MaxBody, d.MaxBody)
	pos(&c.DefaultQueues, d.DefaultQueues)
	pos(&c.TxMaxChecks, d.TxMaxChecks)
	if len(c.DelayLevels) == 0 {
		c.DelayLevels = d.DelayLevels
	}
	dur(&c.ConsumerTimeout, d.ConsumerTimeout)
	dur(&c.LockTTL, d.LockTTL)
	dur(&c.SessionGrace, d.SessionGrace)
	dur(&c.TxCheckAfter, d.TxCheckAfter)
	dur(&c.TxCheckInterval, d.TxCheckInterval)
	dur(&c.BusyAfter, d.BusyAfter)
	dur(&c.ReplicaTimeout, d.ReplicaTimeout)
	dur(&c.RegisterInterval, d.RegisterInterval)
	if c.MaxInFlightBytes <= 0 {
		c.MaxInFlightBytes = d.MaxInFlightBytes
	}
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	return c
}

// Validate checks c; it changes nothing (New fills the defaults).
func (c Config) Validate() error {
	if c.Name == "" || wire.ValidName(c.Name, false) != nil {
		return fmt.Errorf("broker: name %q: 1–127 letters, digits, '_', '-' or '.'", c.Name)
	}
	if c.Dir == "" {
		return errors.New("broker: Config.Dir is required")
	}
	if c.Authenticate == nil {
		return errors.New("broker: Config.Authenticate is required")
	}
	if c.Master != "" && c.SyncReplicas {
		return errors.New("broker: SyncReplicas is a master's setting; this broker is a slave (Master is set)")
	}
	for i, d := range c.DelayLevels {
		if d <= 0 {
			return fmt.Errorf("broker: delay level %d is %v; want a positive duration", i+1, d)
		}
	}
	return nil
}

// Broker is a running broker.
type Broker struct {
	cfg Config
	log *slog.Logger
	st  *store.Store
	srv *rpc.Server
	ln  net.Listener

	tmu    sync.RWMutex
	topics map[string]*wire.TopicConfig
	rr     sync.Map // topic -> *atomic.Uint32 (queue round robin)

	offsets   *offsetTable
	resent    *resentTable
	consumers *consumerTable
	delay     *delayService
	tx        *txService
	repl      *replication

	inflight  atomic.Int64
	putStart  atomic.Int64 // unix ns a store call began, 0 when none is running
	addr      atomic.Value // string
	regKick   chan struct{}
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
	smu       sync.Mutex // orders Start against Shutdown
	started   bool
	metrics   *metrics
}

// ErrBusy is the retriable refusal under back-pressure.
var ErrBusy = errcode.New(errcode.TooManyRequests, "broker: busy")

// ErrServerClosed is returned by Start after Close.
var ErrServerClosed = errcode.New(errcode.Unavailable, "broker: closed")

// New checks cfg and returns an unstarted broker; Start opens its store and
// serves.
func New(cfg Config) (*Broker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Broker{cfg: cfg, log: cfg.Logger, topics: map[string]*wire.TopicConfig{}, regKick: make(chan struct{}, 1),
		stop: make(chan struct{}), metrics: newMetrics(), repl: newReplication()}, nil
}

// open opens the store and the state files.
func (b *Broker) open() error {
	cfg := b.cfg
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	if err := b.loadTopics(); err != nil {
		return err
	}
	var err error
	if b.resent, err = openResent(filepath.Join(cfg.Dir, "resent.json")); err != nil {
		return err
	}
	if b.offsets, err = openOffsets(filepath.Join(cfg.Dir, "offsets.json")); err != nil {
		return err
	}
	b.consumers = newConsumerTable(cfg.ConsumerTimeout, cfg.LockTTL, cfg.SessionGrace)
	sc := cfg.Store
	sc.Dir = filepath.Join(cfg.Dir, "store")
	sc.Logger = cfg.Logger
	sc.Protect = b.protect
	sc.OnFlush = func(d time.Duration) { b.metrics.flushHist.Observe(d.Seconds()) }
	if b.st, err = store.Open(sc); err != nil {
		return fmt.Errorf("broker %s: %w", cfg.Name, err)
	}
	if b.delay, err = newDelayService(b); err != nil {
		b.st.Close()
		b.st = nil
		return err
	}
	b.tx = newTxService(b)
	return nil
}

// Store is the broker's storage engine.
func (b *Broker) Store() *store.Store { return b.st }

// Name is the broker's name.
func (b *Broker) Name() string { return b.cfg.Name }

// Addr is the address clients dial ("" before Start).
func (b *Broker) Addr() string {
	a, _ := b.addr.Load().(string)
	return a
}

// Start opens the store, listens on Config.Addr, serves clients and starts
// the background work (delays, transaction checks, offset flushing,
// name-service registration). It returns once serving has started; the
// broker runs until Shutdown or Close, not until ctx ends.
func (b *Broker) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.smu.Lock()
	defer b.smu.Unlock()
	select {
	case <-b.stop:
		return ErrServerClosed
	default:
	}
	if b.started {
		return errors.New("broker: already started")
	}
	b.started = true
	if b.st == nil { // tests open a broker without serving it first
		if err := b.open(); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", b.cfg.Addr)
	if err != nil {
		return fmt.Errorf("broker: listen on %s: %w", b.cfg.Addr, err)
	}
	srv, err := b.newRPCServer()
	if err != nil {
		ln.Close()
		return err
	}
	b.srv, b.ln = srv, ln
	b.metrics.srv.Store(srv)
	adv := b.cfg.Advertise
	if adv == "" {
		adv = advertised(ln.Addr())
	}
	b.addr.Store(adv)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, rpc.ErrServerClosed) {
			b.log.Error("broker: serving stopped", "err", err)
		}
	}()
	if b.isSlave() {
		b.start(b.replicaLoop, b.flushLoop, b.registerLoop, b.retentionLoop)
	} else {
		b.start(b.delay.run, b.tx.run, b.flushLoop, b.registerLoop, b.retentionLoop)
	}
	b.log.Info("broker serving", "name", b.cfg.Name, "addr", adv, "flush", b.st.FlushPolicy(), "master", b.cfg.Master)
	return nil
}

func (b *Broker) start(fns ...func()) {
	for _, f := range fns {
		b.wg.Add(1)
		go func() { defer b.wg.Done(); f() }()
	}
}

// Shutdown stops taking new calls, lets calls in progress finish until ctx
// ends (long polls are answered at once), then stops the background work,
// saves offsets, delay and transaction progress and closes the store.
// Every call returns once all of it has stopped.
func (b *Broker) Shutdown(ctx context.Context) error {
	var err error
	b.closeOnce.Do(func() {
		b.smu.Lock()
		close(b.stop)
		b.smu.Unlock()
		if b.srv != nil {
			if serr := b.srv.Shutdown(ctx); serr != nil {
				err = fmt.Errorf("broker: drain: %w", serr)
			}
			b.srv.Close()
		}
		b.wg.Wait()
		if b.st != nil {
			err = errors.Join(err, b.offsets.flush(true), b.resent.flush(), b.delay.save(), b.tx.save(), b.st.Close())
		}
		b.closeErr = err
	})
	b.wg.Wait()
	return err
}

// Close is Shutdown with 2 s for calls in progress.
func (b *Broker) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return b.Shutdown(ctx)
}

// --- topics ---

func (b *Broker) topicsPath() string { return filepath.Join(b.cfg.Dir, "topics.json") }

func (b *Broker) loadTopics() error {
	data, err := os.ReadFile(b.topicsPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	var ts []*wire.TopicConfig
	if err := json.Unmarshal(data, &ts); err != nil {
		return fmt.Errorf("broker: %s: %w", b.topicsPath(), err)
	}
	for _, t := range ts {
		b.topics[t.Name] = t
	}
	return nil
}

// saveTopics writes the topic table (under tmu).
func (b *Broker) saveTopicsLocked() error {
	ts := make([]*wire.TopicConfig, 0, len(b.topics))
	for _, t := range b.topics {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, c *wire.TopicConfig) int { return strings.Compare(a.Name, c.Name) })
	data, err := json.MarshalIndent(ts, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(b.topicsPath(), data)
}

// writeFileAtomic replaces path with data, atomically and durably (the
// directory synced after the rename).
func writeFileAtomic(path string, data []byte) error {
	if err := durable.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("broker: writing %s: %w", path, err)
	}
	return nil
}

// topic returns a topic's config, or nil.
func (b *Broker) topic(name string) *wire.TopicConfig {
	b.tmu.RLock()
	defer b.tmu.RUnlock()
	return b.topics[name]
}

// CreateTopic creates a topic, or grows its queue count (queues never
// shrink: their messages stay readable).
func (b *Broker) CreateTopic(cfg wire.TopicConfig) (*wire.TopicConfig, error) {
	if err := wire.ValidTopic(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.Queues == 0 {
		cfg.Queues = b.cfg.DefaultQueues
	}
	if cfg.Queues < 1 || cfg.Queues > wire.MaxQueues {
		return nil, fmt.Errorf("%w queue count %d (want 1–%d)", wire.ErrInvalid, cfg.Queues, wire.MaxQueues)
	}
	b.tmu.Lock()
	t := b.topics[cfg.Name]
	switch {
	case t == nil:
		cfg.Created = time.Now().UnixMilli()
		t = &cfg
		b.topics[cfg.Name] = t
	case cfg.Queues > t.Queues || cfg.Order != t.Order:
		c := *t
		c.Queues, c.Order = max(t.Queues, cfg.Queues), cfg.Order
		t = &c
		b.topics[cfg.Name] = t
	default:
		b.tmu.Unlock()
		return t, nil
	}
	err := b.saveTopicsLocked()
	b.tmu.Unlock()
	if err != nil {
		return nil, err
	}
	b.log.Info("broker: topic created", "topic", t.Name, "queues", t.Queues)
	signalChan(b.regKick)
	return t, nil
}

// ensureSystemTopic creates a retry or dead-letter topic on first use.
func (b *Broker) ensureSystemTopic(name string) error {
	if b.topic(name) != nil {
		return nil
	}
	_, err := b.CreateTopic(wire.TopicConfig{Name: name, Queues: 1})
	return err
}

// DeleteTopic removes a topic from the table: it is no longer routed or
// readable; its messages go with retention.
func (b *Broker) DeleteTopic(name string) error {
	b.tmu.Lock()
	if b.topics[name] == nil {
		b.tmu.Unlock()
		return fmt.Errorf("%w: topic %q on broker %s", ErrNotFound, name, b.cfg.Name)
	}
	delete(b.topics, name)
	err := b.saveTopicsLocked()
	b.tmu.Unlock()
	b.offsets.dropTopic(name)
	signalChan(b.regKick)
	return err
}

// Topics lists the topics with their queues' bounds.
func (b *Broker) Topics() []wire.TopicStats {
	b.tmu.RLock()
	ts := make([]wire.TopicConfig, 0, len(b.topics))
	for _, t := range b.topics {
		ts = append(ts, *t)
	}
	b.tmu.RUnlock()
	slices.SortFunc(ts, func(a, c wire.TopicConfig) int { return strings.Compare(a.Name, c.Name) })
	out := make([]wire.TopicStats, len(ts))
	for i, t := range ts {
		out[i].TopicConfig = t
		for q := 0; q < t.Queues; q++ {
			out[i].Min = append(out[i].Min, b.st.MinOffset(t.Name, uint32(q)))
			out[i].Max = append(out[i].Max, b.st.MaxOffset(t.Name, uint32(q)))
		}
	}
	return out
}

// ErrNotFound marks a missing topic or message.
var ErrNotFound = errcode.New(errcode.NotFound, "broker: not found")

// info is what the broker registers with the name service.
func (b *Broker) info() wire.BrokerInfo {
	b.tmu.RLock()
	defer b.tmu.RUnlock()
	in := wire.BrokerInfo{Name: b.cfg.Name, Addr: b.Addr(), Role: "master", AutoCreate: b.cfg.AutoCreate}
	if b.isSlave() {
		in.Role, in.Master, in.AutoCreate = "slave", b.cfg.Master, false
	}
	for _, t := range b.topics {
		in.Topics = append(in.Topics, *t)
	}
	slices.SortFunc(in.Topics, func(a, c wire.TopicConfig) int { return strings.Compare(a.Name, c.Name) })
	return in
}

func (b *Broker) registerLoop() {
	if b.cfg.Register == nil {
		return
	}
	t := time.NewTicker(b.cfg.RegisterInterval)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := b.cfg.Register(ctx, b.info()); err != nil {
			b.log.Warn("broker: registering with the name service failed", "err", err)
		}
		cancel()
		select {
		case <-b.stop:
			return
		case <-t.C:
		case <-b.regKick:
		}
	}
}

func (b *Broker) flushLoop() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			if err := b.offsets.flush(false); err != nil {
				b.log.Error("broker: saving consumer offsets failed", "err", err)
			}
			if err := b.resent.flush(); err != nil {
				b.log.Error("broker: saving the resent dead letters failed", "err", err)
			}
			if err := b.delay.save(); err != nil {
				b.log.Error("broker: saving delay progress failed", "err", err)
			}
			b.consumers.expire(time.Now())
		}
	}
}

func (b *Broker) retentionLoop() {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			if n, err := b.st.DeleteExpired(time.Now()); err != nil {
				b.log.Error("broker: retention failed", "err", err)
			} else if n > 0 {
				b.log.Info("broker: retention deleted segments", "segments", n)
			}
		}
	}
}

// protect is the lowest commitlog offset a consumer group still needs: the
// message at each group's committed offset in each queue.
func (b *Broker) protect() int64 {
	low := int64(-1)
	for _, o := range b.offsets.all() {
		phys, ok := b.st.PhysOffset(o.Topic, o.Queue, o.Offset)
		if ok && (low < 0 || phys < low) {
			low = phys
		}
	}
	return low // -1: nothing to protect
}

func signalChan(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// advertised is the address to publish for a listener: its own when it is
// bound to one address; for the unspecified address, this host's first
// non-loopback IPv4 address (127.0.0.1 when it has none) and its port.
func advertised(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return a.String()
	}
	host := "127.0.0.1"
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, ia := range addrs {
			if n, ok := ia.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil && !n.IP.IsLinkLocalUnicast() {
				host = n.IP.String()
				break
			}
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}
