// Package server is tangram kv: a Redis-protocol (RESP2/RESP3) server, the
// embedded default behind Tangram's locks, caches, rate limits and dedup
// tables. It runs inside `tangram server` (port 6380) and alone as
// `tangram kv`; any Redis client talks to it.
//
// The key space is split into 64 shards, each a Redis-style dict with
// incremental rehash, guarded by its own mutex: a command locks the shards
// of its keys in ascending order and is atomic; MULTI/EXEC locks every
// shard its queued commands touch. Persistence is an append-only log
// (fsync always, everysec or no) compacted shard by shard into a base file
// without fork and without a copy of the data set (aof.go).
//
// On Linux, event loops (loop_linux.go; one per CPU by default) serve the
// connections with epoll, as Redis's ae loop does; commands that may wait
// run aside on their own goroutines. Elsewhere every connection has a
// goroutine (client.go's serve).
//
// Lock order: shard mutexes in ascending index, then aof.mu, then
// pubsub.mu, then a client's outMu. Server.mu (the client list) is never
// held while a shard is taken.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// ErrClosed is returned by Start after Close, and by a second Start.
var ErrClosed = errcode.New(errcode.Unavailable, "kv: server closed")

// Fsync policies of the append-only log.
const (
	FsyncAlways   = "always"
	FsyncEverySec = "everysec"
	FsyncNo       = "no"
)

// Config configures the server.
type Config struct {
	// Addr is the listener, default ":6380"; "127.0.0.1:0" picks a port.
	Addr string
	// Dir holds the append-only log; empty keeps everything in memory only.
	Dir string
	// Fsync is the log's fsync policy: always (before each reply),
	// everysec (default) or no (the kernel decides).
	Fsync string
	// RewriteMinSize and RewritePercent start a background rewrite when
	// the log has grown RewritePercent% over its size after the last one
	// and is at least RewriteMinSize bytes (Redis: 100%, 64 MB).
	RewriteMinSize int64
	RewritePercent int
	// Password, when set, is what AUTH <password> must give (Redis's
	// requirepass). Authenticate, when set, checks AUTH <user> <password>
	// (and HELLO … AUTH): tangram server passes its API tokens through it.
	// With neither set, connections need no AUTH.
	Password     string
	Authenticate func(ctx context.Context, user, password string) error
	// Databases is the number of SELECT-able databases (default 16).
	Databases int
	// MaxClients bounds open connections (default 10000).
	MaxClients int
	// IdleTimeout closes a connection that has sent nothing for this long
	// (default 5 minutes; subscribers and blocked clients are exempt, as in
	// Redis). KeepAlive is the TCP keep-alive period that finds half-open
	// peers (default 60 s).
	IdleTimeout time.Duration
	KeepAlive   time.Duration
	// MaxMemory, when > 0, bounds the data's estimated size; MaxMemoryPolicy
	// picks what happens at the bound: noeviction (default: writes get an
	// OOM error), allkeys-lru, allkeys-lfu, allkeys-random, volatile-lru,
	// volatile-lfu, volatile-random, volatile-ttl.
	MaxMemory       int64
	MaxMemoryPolicy string
	// SlowLogThreshold: commands slower than this enter the slow log
	// (default 10 ms); SlowLogLen keeps that many (default 128).
	SlowLogThreshold time.Duration
	SlowLogLen       int
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Version is what INFO reports as tangram_version.
	Version string
	// IOLoops is the number of event loops serving connections on Linux
	// (default 0: one per GOMAXPROCS); a negative value gives every
	// connection its own goroutine instead (the only way elsewhere).
	IOLoops int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Addr: ":6380", Fsync: FsyncEverySec, RewriteMinSize: 64 << 20, RewritePercent: 100,
		Databases: 16, MaxClients: 10000, IdleTimeout: 5 * time.Minute, KeepAlive: time.Minute,
		MaxMemoryPolicy: "noeviction", SlowLogThreshold: 10 * time.Millisecond, SlowLogLen: 128,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Addr == "" {
		c.Addr = d.Addr
	}
	if c.Fsync == "" {
		c.Fsync = d.Fsync
	}
	if c.RewriteMinSize <= 0 {
		c.RewriteMinSize = d.RewriteMinSize
	}
	if c.RewritePercent <= 0 {
		c.RewritePercent = d.RewritePercent
	}
	if c.Databases <= 0 {
		c.Databases = d.Databases
	}
	if c.MaxClients <= 0 {
		c.MaxClients = d.MaxClients
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = d.KeepAlive
	}
	if c.MaxMemoryPolicy == "" {
		c.MaxMemoryPolicy = d.MaxMemoryPolicy
	}
	if c.SlowLogThreshold == 0 {
		c.SlowLogThreshold = d.SlowLogThreshold
	}
	if c.SlowLogLen <= 0 {
		c.SlowLogLen = d.SlowLogLen
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks c; it changes nothing.
func (c Config) Validate() error {
	switch c.Fsync {
	case "", FsyncAlways, FsyncEverySec, FsyncNo:
	default:
		return fmt.Errorf("kv: fsync policy %q: want always, everysec or no", c.Fsync)
	}
	if c.Databases < 0 || c.Databases > 256 {
		return fmt.Errorf("kv: %d databases: want 1 to 256", c.Databases)
	}
	if c.MaxMemoryPolicy != "" && !validPolicy(c.MaxMemoryPolicy) {
		return fmt.Errorf("kv: maxmemory policy %q: want one of %s", c.MaxMemoryPolicy, strings.Join(policies, ", "))
	}
	if c.MaxMemory < 0 {
		return fmt.Errorf("kv: maxmemory %d is negative", c.MaxMemory)
	}
	return nil
}

// Server is a kv server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	shards [numShards]shard

	mu       sync.Mutex
	ln       net.Listener
	clients  map[int64]*client
	started  bool
	closed   bool
	nextID   atomic.Int64
	wg       sync.WaitGroup
	stop     chan struct{}
	startAt  time.Time
	lruBase  atomic.Uint32
	aof      *aof
	pubsub   pubsub
	stats    stats
	slow     slowLog
	scripts  scripts
	cfgMu    sync.Mutex // guards the runtime-settable fields below
	maxMem   atomic.Int64
	policy   atomic.Value // string
	loadTime time.Duration
	loops    []*loop
	nextLoop int // guarded by mu
	trackers trackers
}

// New makes a server from cfg; it does no I/O.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{cfg: cfg, log: cfg.Logger, clients: map[int64]*client{}, stop: make(chan struct{})}
	for i := range s.shards {
		s.shards[i].dbs = make([]*dict[entry], cfg.Databases)
		s.shards[i].vol = make([]*dict[struct{}], cfg.Databases)
	}
	s.maxMem.Store(cfg.MaxMemory)
	s.policy.Store(cfg.MaxMemoryPolicy)
	s.slow.max = cfg.SlowLogLen
	s.pubsub.init()
	s.scripts.init()
	return s, nil
}

// Start loads the log (when Dir is set), listens and serves; it returns
// once the server accepts connections.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.started {
		s.mu.Unlock()
		return errors.New("kv: already started")
	}
	s.started = true
	s.mu.Unlock()
	s.startAt = time.Now()
	s.tickLRU()
	if s.cfg.Dir != "" {
		t0 := time.Now()
		a, err := openAOF(s, filepath.Clean(s.cfg.Dir), s.cfg.Fsync)
		if err != nil {
			return err
		}
		s.aof = a
		s.loadTime = time.Since(t0)
	}
	lc := net.ListenConfig{KeepAlive: s.cfg.KeepAlive}
	ln, err := lc.Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		if s.aof != nil {
			s.aof.close()
			s.aof = nil
		}
		return fmt.Errorf("kv: listen %s: %w", s.cfg.Addr, err)
	}
	if loopsSupported && s.cfg.IOLoops >= 0 {
		n := s.cfg.IOLoops
		if n == 0 {
			n = runtime.GOMAXPROCS(0)
		}
		for range n {
			l, err := newLoop(s)
			if err != nil {
				ln.Close()
				for _, l := range s.loops {
					l.shutdown()
				}
				if s.aof != nil {
					s.aof.close()
					s.aof = nil
				}
				return fmt.Errorf("kv: event loop: %w", err)
			}
			s.loops = append(s.loops, l)
		}
		for _, l := range s.loops {
			s.goFunc(l.run)
		}
	}
	s.mu.Lock()
	s.ln = ln
	s.mu.Unlock()
	s.goFunc(s.acceptLoop)
	s.goFunc(s.cron)
	if s.aof != nil {
		s.goFunc(s.aof.flusher)
	}
	s.log.Info("kv: serving", "addr", ln.Addr().String(), "dir", s.cfg.Dir, "fsync", s.cfg.Fsync, "keys", s.dbsize(-1), "load", s.loadTime.Round(time.Millisecond))
	return nil
}

func (s *Server) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Addr is the listener's address ("" before Start).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Shutdown stops accepting, lets each connection finish the command it is
// running, then flushes and closes the log.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	return s.Close()
}

// Close stops the server at once: connections are closed, the log flushed
// (and fsynced) and closed; it returns when every goroutine has ended.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.stop)
	if s.ln != nil {
		s.ln.Close()
	}
	for _, c := range s.clients {
		c.kill()
	}
	s.mu.Unlock()
	for _, l := range s.loops {
		l.wake()
	}
	s.wakeAllWaiters()
	s.wg.Wait()
	if s.aof != nil {
		return s.aof.close()
	}
	return nil
}

func (s *Server) acceptLoop() {
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.stop:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("kv: accept", "err", err)
			select {
			case <-s.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			conn.Close()
			return
		}
		if len(s.clients) >= s.cfg.MaxClients {
			s.mu.Unlock()
			s.stats.rejected.Add(1)
			conn.Write([]byte("-ERR max number of clients reached\r\n"))
			conn.Close()
			continue
		}
		if len(s.loops) > 0 {
			l := s.loops[s.nextLoop%len(s.loops)]
			s.nextLoop++
			c, err := l.adopt(conn)
			if err != nil {
				s.mu.Unlock()
				s.log.Warn("kv: taking over a connection", "err", err)
				conn.Close()
				continue
			}
			s.clients[c.id] = c
			s.trackers.byID.Store(c.id, c)
			s.mu.Unlock()
			s.stats.connections.Add(1)
			if !l.post(loopOp{kind: opAdd, c: c}) {
				l.forget(c) // the server is closing
			}
			continue
		}
		c := newClient(s, conn)
		s.clients[c.id] = c
		s.trackers.byID.Store(c.id, c)
		s.mu.Unlock()
		s.stats.connections.Add(1)
		s.goFunc(c.serve)
	}
}

func (s *Server) removeClient(c *client) {
	s.mu.Lock()
	delete(s.clients, c.id)
	s.mu.Unlock()
}

// needAuth reports whether connections must AUTH first.
func (s *Server) needAuth() bool { return s.cfg.Password != "" || s.cfg.Authenticate != nil }

// lruClock is the LRU clock in seconds (24 bits, as Redis).
func (s *Server) lruClock() uint32 { return s.lruBase.Load() }

func (s *Server) tickLRU() { s.lruBase.Store(uint32(time.Now().Unix()) & (1<<24 - 1)) }

// dbsize counts the keys of db (every database when db < 0).
func (s *Server) dbsize(db int) int64 {
	var n int64
	for i := range s.shards {
		sh := &s.shards[i]
		if db < 0 {
			n += sh.keys.Load()
			continue
		}
		sh.mu.Lock()
		if t := sh.dbs[db]; t != nil {
			n += int64(t.len())
		}
		sh.mu.Unlock()
	}
	return n
}

// usedMemory is the data's estimated size in bytes.
func (s *Server) usedMemory() int64 {
	var n int64
	for i := range s.shards {
		n += s.shards[i].mem.Load()
	}
	return n
}
