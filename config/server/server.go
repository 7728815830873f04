package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/config"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tangram-dev/tangram/internal/park"
	"github.com/tangram-dev/tangram/internal/store"
)

// ErrServerClosed is returned by Start after Close.
var ErrServerClosed = errors.New("config: server closed")

// Config configures a config center Server.
type Config struct {
	// Store holds all config state. Required.
	Store *store.Store
	// Cipher encrypts secret items. Required.
	Cipher *Cipher
	// Logger; default slog.Default().
	Logger *slog.Logger
	// ScanInterval is how often release messages written by other servers
	// sharing the store are scanned. Default 1s.
	ScanInterval time.Duration
	// MaxValueBytes limits one value. Default 1 MiB.
	MaxValueBytes int
	// MaxHold is the longest a watch is held open. Default 60s.
	MaxHold time.Duration
	// Registerer receives the config center's metrics. Default: none.
	Registerer prometheus.Registerer
	// Parker, when set, parks held watch connections without a goroutine
	// each (the server serves Parker.Listener()). Nil: watches block a
	// goroutine, as in any net/http handler.
	Parker *park.Parker
	// Envs are the environments created on an empty store. Default
	// config.DefaultEnvs(): dev, test, prod.
	Envs []string
}

// DefaultConfig returns a Config with defaults filled in (Store and Cipher unset).
func DefaultConfig() Config {
	return Config{ScanInterval: time.Second, MaxValueBytes: config.MaxValueBytes, MaxHold: 60 * time.Second,
		Envs: config.DefaultEnvs(), Logger: slog.Default()}
}

// withDefaults returns c with its zero fields set from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.ScanInterval <= 0 {
		c.ScanInterval = d.ScanInterval
	}
	if c.MaxValueBytes <= 0 {
		c.MaxValueBytes = d.MaxValueBytes
	}
	if c.MaxHold <= 0 {
		c.MaxHold = d.MaxHold
	}
	if c.Envs == nil {
		c.Envs = d.Envs
	}
	return c
}

// Validate checks c; it changes nothing (New fills the defaults).
func (c Config) Validate() error {
	if c.Store == nil {
		return errors.New("config: Config.Store is required")
	}
	if c.Cipher == nil {
		return errors.New("config: Config.Cipher is required")
	}
	for _, e := range c.Envs {
		if err := config.ValidName("env", e); err != nil {
			return fmt.Errorf("config: Config.Envs: %w", err)
		}
	}
	return nil
}

// Server is the config center: the model, releases, gray, approvals, the
// watch hub and the HTTP API. It is safe for concurrent use.
type Server struct {
	cfg    Config
	st     *store.Store
	cipher *Cipher
	log    *slog.Logger
	hub    *hub
	// instances collects client fetches for the console's client list.
	instances instanceLog
	// served caches what fetches need, per namespace and notification id.
	served  servedCache
	metrics *metrics

	started atomic.Bool
	closed  atomic.Bool
	// owned tracks short-lived goroutines answering parked watches.
	ownMu    sync.Mutex
	draining bool
	owned    sync.WaitGroup
	ready    chan struct{}
	stop     chan struct{}
	kick     chan struct{} // scan now (a PostgreSQL NOTIFY arrived)
	wg       sync.WaitGroup
}

// New returns a Server; Start seeds default environments and starts the
// release-message scanner.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("config: metrics: %w", err)
	}
	return &Server{cfg: cfg, st: cfg.Store, cipher: cfg.Cipher, log: cfg.Logger, metrics: m, hub: newHub(), ready: make(chan struct{}), stop: make(chan struct{}), kick: make(chan struct{}, 1)}, nil
}

// Start seeds the default environments on an empty store, loads the latest
// notification ids and starts the scanner. It returns once ready; the work
// it starts runs until Shutdown or Close, not until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	if s.closed.Load() {
		return ErrServerClosed
	}
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("config: server already started")
	}
	if err := s.checkKey(ctx); err != nil {
		return err
	}
	if err := s.seed(ctx); err != nil {
		return err
	}
	last, err := s.loadNotifications(ctx)
	if err != nil {
		return err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.scanLoop(last)
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.instanceLoop()
	}()
	if s.st.CanListen() {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.listenLoop()
		}()
	}
	close(s.ready)
	return nil
}

// Ready is closed once Start has finished.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Shutdown stops the server gracefully: held watches are answered at once
// (503: clients move to another server), then it waits for the scanner
// and the goroutines answering watches, until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Close()
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("config: shutdown: %w", ctx.Err())
	}
}

// Close stops the scanner, releases every held watch and waits.
// Every call returns once they have stopped.
func (s *Server) Close() error {
	if s.closed.CompareAndSwap(false, true) {
		close(s.stop)
		fired := s.hub.closeAll()
		s.metrics.answers.WithLabelValues("shutdown").Add(float64(len(fired)))
		s.fanout(fired, http.StatusServiceUnavailable)
		s.ownMu.Lock()
		s.draining = true
		s.ownMu.Unlock()
	}
	s.owned.Wait()
	s.wg.Wait()
	return nil
}

// ErrKeyMismatch is returned by Start when the secret key is not the one
// the store's secrets were written with.
var ErrKeyMismatch = errors.New("config: secret key mismatch")

// checkKey records the secret key's fingerprint on the first start and
// refuses a different key later: every server sharing a store must use the
// same key, or secrets written by one could not be read by another.
func (s *Server) checkKey(ctx context.Context) error {
	fp := s.cipher.Fingerprint()
	var have string
	err := s.st.QueryRowContext(ctx, `SELECT value FROM server_settings WHERE name = ?`, "config.secret_key_fingerprint").Scan(&have)
	if errors.Is(err, sql.ErrNoRows) {
		_, err = s.st.ExecContext(ctx, `INSERT INTO server_settings (name, value, updated_at) VALUES (?, ?, ?)`, "config.secret_key_fingerprint", fp, store.NowMillis())
		if store.IsUniqueViolation(err) {
			return s.checkKey(ctx) // another server recorded one at the same moment
		}
		if err != nil {
			return fmt.Errorf("config: record secret key fingerprint: %w", err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("config: read secret key fingerprint: %w", err)
	}
	if have != fp {
		return fmt.Errorf("%w: this store's secrets were written with another key; start every server with the same --secret-key-file or TANGRAM_SECRET_KEY", ErrKeyMismatch)
	}
	return nil
}

func (s *Server) seed(ctx context.Context) error {
	var n int
	if err := s.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM config_envs`).Scan(&n); err != nil {
		return fmt.Errorf("config: seed: %w", err)
	}
	if n > 0 {
		return nil
	}
	for _, e := range s.cfg.Envs {
		_, err := s.st.ExecContext(ctx, `INSERT INTO config_envs (name, description, emergency_publish, created_at) VALUES (?, ?, ?, ?)`,
			e, "", 1, store.NowMillis())
		if err != nil && !store.IsUniqueViolation(err) {
			return fmt.Errorf("config: seed env %s: %w", e, err)
		}
	}
	return nil
}

// InstanceFlushInterval is how often client fetch records are written.
const InstanceFlushInterval = 2 * time.Second

func (s *Server) instanceLoop() {
	t := time.NewTicker(InstanceFlushInterval)
	defer t.Stop()
	flush := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.flushInstances(ctx); err != nil {
			s.log.Warn("config: record client instances", "err", err)
		}
	}
	for {
		select {
		case <-s.stop:
			flush() // the last fetches before shutdown
			return
		case <-t.C:
			flush()
		}
	}
}
