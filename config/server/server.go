package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/config"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tangram-dev/tangram/internal/audit"
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

// CreateEnv adds an environment and gives every app its default namespace in it.
func (s *Server) CreateEnv(ctx context.Context, actor string, e config.Env) (*config.Env, error) {
	if err := config.ValidName("env", e.Name); err != nil {
		return nil, err
	}
	e.CreatedAt = store.NowMillis()
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO config_envs (name, description, emergency_publish, created_at) VALUES (?, ?, ?, ?)`,
			e.Name, e.Description, b2i(e.EmergencyPublish), e.CreatedAt)
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("%w: environment %q", config.ErrExists, e.Name)
		}
		if err != nil {
			return err
		}
		apps, err := s.listApps(ctx, tx)
		if err != nil {
			return err
		}
		for _, a := range apps {
			if err := s.createDefaults(ctx, tx, e.Name, a.Name); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.env.create", Resource: "config/" + e.Name, After: audit.Value(e)})
	})
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// UpdateEnv changes an environment's description and emergency-publish switch.
func (s *Server) UpdateEnv(ctx context.Context, actor string, e config.Env) (*config.Env, error) {
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		before, err := s.getEnv(ctx, tx, e.Name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE config_envs SET description = ?, emergency_publish = ? WHERE name = ?`, e.Description, b2i(e.EmergencyPublish), e.Name); err != nil {
			return err
		}
		e.CreatedAt = before.CreatedAt
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.env.update", Resource: "config/" + e.Name, Before: audit.Value(before), After: audit.Value(e)})
	})
	if err != nil {
		return nil, err
	}
	return &e, nil
}

func (s *Server) getEnv(ctx context.Context, q store.Querier, name string) (*config.Env, error) {
	var e config.Env
	var em int
	err := q.QueryRowContext(ctx, `SELECT name, description, emergency_publish, created_at FROM config_envs WHERE name = ?`, name).Scan(&e.Name, &e.Description, &em, &e.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: environment %q", config.ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("config: load env: %w", err)
	}
	e.EmergencyPublish = em != 0
	return &e, nil
}

// ListEnvs lists environments by name.
func (s *Server) ListEnvs(ctx context.Context) ([]config.Env, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT name, description, emergency_publish, created_at FROM config_envs ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("config: list envs: %w", err)
	}
	defer rows.Close()
	var out []config.Env
	for rows.Next() {
		var e config.Env
		var em int
		if err := rows.Scan(&e.Name, &e.Description, &em, &e.CreatedAt); err != nil {
			return nil, err
		}
		e.EmergencyPublish = em != 0
		out = append(out, e)
	}
	return out, rows.Err()
}

// CreateApp adds an app with a default cluster and an "application"
// properties namespace in every environment.
func (s *Server) CreateApp(ctx context.Context, actor string, a config.App) (*config.App, error) {
	if err := config.ValidName("app", a.Name); err != nil {
		return nil, err
	}
	if a.Owner == "" {
		a.Owner = actor
	}
	if len(a.Owner) > 64 {
		return nil, fmt.Errorf("%w: owner %q is longer than 64 characters", config.ErrInvalid, a.Owner)
	}
	a.CreatedAt = store.NowMillis()
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO config_apps (name, owner, description, created_at) VALUES (?, ?, ?, ?)`, a.Name, a.Owner, a.Description, a.CreatedAt)
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("%w: app %q", config.ErrExists, a.Name)
		}
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT name FROM config_envs`)
		if err != nil {
			return err
		}
		var envs []string
		for rows.Next() {
			var e string
			if err := rows.Scan(&e); err != nil {
				rows.Close()
				return err
			}
			envs = append(envs, e)
		}
		rows.Close()
		for _, e := range envs {
			if err := s.createDefaults(ctx, tx, e, a.Name); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.app.create", Resource: "config/*/" + a.Name, After: audit.Value(a)})
	})
	if err != nil {
		return nil, err
	}
	return &a, nil
}

func (s *Server) createDefaults(ctx context.Context, tx *store.Tx, env, app string) error {
	now := store.NowMillis()
	if _, err := tx.ExecContext(ctx, `INSERT INTO config_clusters (env, app, name, created_at) VALUES (?, ?, ?, ?)`, env, app, config.DefaultCluster, now); err != nil {
		return fmt.Errorf("config: create default cluster: %w", err)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO config_namespaces (env, app, cluster, name, format, link_app, last_editor, created_at) VALUES (?, ?, ?, ?, ?, '', '', ?)`,
		env, app, config.DefaultCluster, config.DefaultNamespace, string(config.Properties), now)
	if err != nil {
		return fmt.Errorf("config: create default namespace: %w", err)
	}
	return nil
}

func (s *Server) listApps(ctx context.Context, q store.Querier) ([]config.App, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, owner, description, created_at FROM config_apps ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("config: list apps: %w", err)
	}
	defer rows.Close()
	var out []config.App
	for rows.Next() {
		var a config.App
		if err := rows.Scan(&a.Name, &a.Owner, &a.Description, &a.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// ListApps lists apps by name.
func (s *Server) ListApps(ctx context.Context) ([]config.App, error) { return s.listApps(ctx, s.st) }

// GetApp loads one app.
func (s *Server) GetApp(ctx context.Context, name string) (*config.App, error) {
	var a config.App
	err := s.st.QueryRowContext(ctx, `SELECT name, owner, description, created_at FROM config_apps WHERE name = ?`, name).Scan(&a.Name, &a.Owner, &a.Description, &a.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: app %q", config.ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("config: load app: %w", err)
	}
	return &a, nil
}

// CreateCluster adds a named cluster (e.g. a data centre) to an app in an
// environment, with the same namespaces as its default cluster (empty).
// Clients in a cluster read its namespaces and fall back to the default
// cluster for namespaces it has no release of.
func (s *Server) CreateCluster(ctx context.Context, actor, env, app, name string) error {
	if err := config.ValidName("cluster", name); err != nil {
		return err
	}
	return s.st.InTx(ctx, func(tx *store.Tx) error {
		if _, err := s.getEnv(ctx, tx, env); err != nil {
			return err
		}
		if _, err := s.GetApp(ctx, app); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO config_clusters (env, app, name, created_at) VALUES (?, ?, ?, ?)`, env, app, name, store.NowMillis())
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("%w: cluster %q of %s/%s", config.ErrExists, name, env, app)
		}
		if err != nil {
			return err
		}
		nss, err := s.listNamespaces(ctx, tx, env, app, config.DefaultCluster)
		if err != nil {
			return err
		}
		for _, ns := range nss {
			if _, err := tx.ExecContext(ctx, `INSERT INTO config_namespaces (env, app, cluster, name, format, is_public, link_app, last_editor, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?)`,
				env, app, name, ns.NS, string(ns.Format), b2i(ns.Public), ns.LinkApp, store.NowMillis()); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.cluster.create", Resource: "config/" + env + "/" + app + "/" + name})
	})
}

// ListClusters lists an app's clusters in an environment.
func (s *Server) ListClusters(ctx context.Context, env, app string) ([]string, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT name FROM config_clusters WHERE env = ? AND app = ? ORDER BY name`, env, app)
	if err != nil {
		return nil, fmt.Errorf("config: list clusters: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		if err := s.explainMissing(ctx, config.Coord{Env: env, App: app}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// CreateNamespace adds a namespace to a cluster.
func (s *Server) CreateNamespace(ctx context.Context, actor, env, app, cluster string, spec config.NamespaceSpec) (*config.Namespace, error) {
	c := config.Coord{Env: env, App: app, Cluster: cluster, NS: spec.Name}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var format config.Format
	var err error
	if spec.Format == "" {
		format = config.FormatFromName(spec.Name)
	} else if format, err = config.ParseFormat(spec.Format); err != nil {
		return nil, err
	}
	if spec.Public && spec.LinkApp != "" {
		return nil, fmt.Errorf("%w: a namespace is either public or linked to another app's public namespace, not both", config.ErrInvalid)
	}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM config_clusters WHERE env = ? AND app = ? AND name = ?`, env, app, cluster).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			if err := s.explainMissing(ctx, c); err != nil {
				return err
			}
			return fmt.Errorf("%w: cluster %q of %s/%s", config.ErrNotFound, cluster, env, app)
		}
		if spec.LinkApp != "" {
			var pf string
			err := tx.QueryRowContext(ctx, `SELECT format FROM config_namespaces WHERE env = ? AND app = ? AND name = ? AND is_public = 1 ORDER BY id LIMIT 1`, env, spec.LinkApp, spec.Name).Scan(&pf)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w: public namespace %q of app %q in %s", config.ErrNotFound, spec.Name, spec.LinkApp, env)
			}
			if err != nil {
				return err
			}
			format = config.Format(pf)
		}
		if spec.Public {
			var owner string
			err := tx.QueryRowContext(ctx, `SELECT app FROM config_namespaces WHERE env = ? AND name = ? AND is_public = 1 AND app <> ? LIMIT 1`, env, spec.Name, app).Scan(&owner)
			if err == nil {
				return fmt.Errorf("%w: public namespace %q already belongs to app %q in %s", config.ErrExists, spec.Name, owner, env)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO config_namespaces (env, app, cluster, name, format, is_public, link_app, last_editor, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?)`,
			env, app, cluster, spec.Name, string(format), b2i(spec.Public), spec.LinkApp, store.NowMillis())
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("%w: namespace %s", config.ErrExists, c)
		}
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.namespace.create", Resource: "config/" + c.String(), After: audit.Value(spec)})
	})
	if err != nil {
		return nil, err
	}
	return s.Namespace(ctx, c)
}

const nsCols = `id, env, app, cluster, name, format, is_public, link_app, require_approval, separate_publisher, draft_version, last_editor, release_id, created_at`

func scanNS(sc interface{ Scan(...any) error }) (*config.Namespace, error) {
	var ns config.Namespace
	var format string
	var pub, ra, sp int
	err := sc.Scan(&ns.ID, &ns.Env, &ns.App, &ns.Cluster, &ns.NS, &format, &pub, &ns.LinkApp, &ra, &sp, &ns.DraftVersion, &ns.LastEditor, &ns.ReleaseID, &ns.CreatedAt)
	if err != nil {
		return nil, err
	}
	ns.Format, ns.Public, ns.RequireApproval, ns.SeparatePublisher = config.Format(format), pub != 0, ra != 0, sp != 0
	return &ns, nil
}

func (s *Server) listNamespaces(ctx context.Context, q store.Querier, env, app, cluster string) ([]config.Namespace, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+nsCols+` FROM config_namespaces WHERE env = ? AND app = ? AND cluster = ? ORDER BY name`, env, app, cluster)
	if err != nil {
		return nil, fmt.Errorf("config: list namespaces: %w", err)
	}
	defer rows.Close()
	var out []config.Namespace
	for rows.Next() {
		ns, err := scanNS(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *ns)
	}
	return out, rows.Err()
}

// ListNamespaces lists a cluster's namespaces.
func (s *Server) ListNamespaces(ctx context.Context, env, app, cluster string) ([]config.Namespace, error) {
	out, err := s.listNamespaces(ctx, s.st, env, app, cluster)
	if err == nil && len(out) == 0 {
		if err := s.explainMissing(ctx, config.Coord{Env: env, App: app, Cluster: cluster}); err != nil {
			return nil, err
		}
	}
	return out, err
}

// Namespace loads one namespace.
func (s *Server) Namespace(ctx context.Context, c config.Coord) (*config.Namespace, error) {
	return s.loadNS(ctx, s.st, c)
}

func (s *Server) loadNS(ctx context.Context, q store.Querier, c config.Coord) (*config.Namespace, error) {
	ns, err := scanNS(q.QueryRowContext(ctx, `SELECT `+nsCols+` FROM config_namespaces WHERE env = ? AND app = ? AND cluster = ? AND name = ?`, c.Env, c.App, c.Cluster, c.NS))
	if errors.Is(err, sql.ErrNoRows) {
		if err := s.explainMissing(ctx, c); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: namespace %q in %s/%s/%s", config.ErrNotFound, c.NS, c.Env, c.App, c.Cluster)
	}
	if err != nil {
		return nil, fmt.Errorf("config: load namespace %s: %w", c, err)
	}
	return ns, nil
}

// explainMissing names the first missing part of c (env, app, cluster).
func (s *Server) explainMissing(ctx context.Context, c config.Coord) error {
	var n int
	if c.Env != "" {
		if err := s.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM config_envs WHERE name = ?`, c.Env).Scan(&n); err == nil && n == 0 {
			return fmt.Errorf("%w: environment %q", config.ErrNotFound, c.Env)
		}
	}
	if c.App != "" {
		if err := s.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM config_apps WHERE name = ?`, c.App).Scan(&n); err == nil && n == 0 {
			return fmt.Errorf("%w: app %q", config.ErrNotFound, c.App)
		}
	}
	if c.Cluster != "" {
		if err := s.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM config_clusters WHERE env = ? AND app = ? AND name = ?`, c.Env, c.App, c.Cluster).Scan(&n); err == nil && n == 0 {
			return fmt.Errorf("%w: cluster %q of app %q in %s", config.ErrNotFound, c.Cluster, c.App, c.Env)
		}
	}
	return nil
}

// UpdateSettings changes a namespace's release rules.
func (s *Server) UpdateSettings(ctx context.Context, actor string, c config.Coord, set config.Settings) (*config.Namespace, error) {
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, err := s.loadNS(ctx, tx, c)
		if err != nil {
			return err
		}
		ra, sp := ns.RequireApproval, ns.SeparatePublisher
		if set.RequireApproval != nil {
			ra = *set.RequireApproval
		}
		if set.SeparatePublisher != nil {
			sp = *set.SeparatePublisher
		}
		if _, err := tx.ExecContext(ctx, `UPDATE config_namespaces SET require_approval = ?, separate_publisher = ? WHERE id = ?`, b2i(ra), b2i(sp), ns.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.namespace.settings", Resource: "config/" + c.String(),
			Before: fmt.Sprintf("require_approval=%v separate_publisher=%v", ns.RequireApproval, ns.SeparatePublisher),
			After:  fmt.Sprintf("require_approval=%v separate_publisher=%v", ra, sp)})
	})
	if err != nil {
		return nil, err
	}
	return s.Namespace(ctx, c)
}

// Items returns a namespace's draft items (secrets masked unless reveal).
func (s *Server) Items(ctx context.Context, c config.Coord, reveal bool) ([]config.Item, error) {
	ns, err := s.Namespace(ctx, c)
	if err != nil {
		return nil, err
	}
	items, err := s.items(ctx, s.st, ns.ID)
	if err != nil {
		return nil, err
	}
	for i := range items {
		items[i].Value = s.present(items[i].Value, items[i].Secret, reveal)
	}
	return items, nil
}

func (s *Server) present(v string, secret, reveal bool) string {
	if !secret {
		return v
	}
	if !reveal {
		return config.Masked
	}
	plain, err := s.cipher.Open(v)
	if err != nil {
		s.log.Error("decrypt secret", "err", err)
		return config.Masked
	}
	return plain
}

func (s *Server) items(ctx context.Context, q store.Querier, nsID int64) ([]config.Item, error) {
	rows, err := q.QueryContext(ctx, `SELECT item_key, value, secret, comment, updated_by, updated_at FROM config_items WHERE ns_id = ? ORDER BY item_key`, nsID)
	if err != nil {
		return nil, fmt.Errorf("config: load items: %w", err)
	}
	defer rows.Close()
	var out []config.Item
	for rows.Next() {
		var it config.Item
		var sec int
		if err := rows.Scan(&it.Key, &it.Value, &sec, &it.Comment, &it.UpdatedBy, &it.UpdatedAt); err != nil {
			return nil, err
		}
		it.Secret = sec != 0
		out = append(out, it)
	}
	return out, rows.Err()
}

// checkItem validates an item for a namespace's format and size limit.
func (s *Server) checkItem(ns *config.Namespace, it config.Item) error {
	if ns.Format == config.Properties {
		if err := config.ValidKey(it.Key); err != nil {
			return err
		}
	} else if it.Key != config.ContentKey {
		return fmt.Errorf("%w: namespace %s is %s; its one item is %q, not %q", config.ErrInvalid, ns.Coord, ns.Format, config.ContentKey, it.Key)
	}
	if len(it.Value) > s.cfg.MaxValueBytes {
		return fmt.Errorf("%w: value of %q is %d bytes; the limit is %d", config.ErrTooLarge, it.Key, len(it.Value), s.cfg.MaxValueBytes)
	}
	if !validUTF8(it.Value) {
		return fmt.Errorf("%w: value of %q is not valid UTF-8", config.ErrInvalid, it.Key)
	}
	return nil
}

// EditDraft applies a batch of changes to a namespace's draft in one
// transaction and returns the new draft version.
func (s *Server) EditDraft(ctx context.Context, actor string, c config.Coord, e config.Edit) (int64, error) {
	var version int64
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, err := s.loadNS(ctx, tx, c)
		if err != nil {
			return err
		}
		if e.Version != nil && *e.Version != ns.DraftVersion {
			return &config.ConflictError{Current: ns.DraftVersion, Given: *e.Version}
		}
		existing, err := s.items(ctx, tx, ns.ID)
		if err != nil {
			return err
		}
		old := make(map[string]config.Item, len(existing))
		for _, it := range existing {
			old[it.Key] = it
		}
		var before, after []config.Change
		now := store.NowMillis()
		keep := map[string]bool{}
		for _, it := range e.Set {
			if err := s.checkItem(ns, it); err != nil {
				return err
			}
			keep[it.Key] = true
			stored := it.Value
			if it.Secret {
				stored = s.cipher.Seal(it.Value)
			}
			prev, had := old[it.Key]
			if had {
				if !prev.Secret && !it.Secret && prev.Value == it.Value && prev.Comment == it.Comment {
					continue
				}
				_, err = tx.ExecContext(ctx, `UPDATE config_items SET value = ?, secret = ?, comment = ?, updated_by = ?, updated_at = ? WHERE ns_id = ? AND item_key = ?`,
					stored, b2i(it.Secret), it.Comment, actor, now, ns.ID, it.Key)
				before = append(before, config.Change{Key: it.Key, Old: maskIf(prev.Value, prev.Secret)})
			} else {
				_, err = tx.ExecContext(ctx, `INSERT INTO config_items (ns_id, item_key, value, secret, comment, position, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)`,
					ns.ID, it.Key, stored, b2i(it.Secret), it.Comment, actor, now)
			}
			if err != nil {
				return fmt.Errorf("config: write item %q: %w", it.Key, err)
			}
			after = append(after, config.Change{Key: it.Key, New: maskIf(it.Value, it.Secret)})
		}
		dels := e.Delete
		if e.Replace {
			for k := range old {
				if !keep[k] {
					dels = append(dels, k)
				}
			}
		}
		for _, k := range dels {
			prev, had := old[k]
			if !had {
				if e.Replace {
					continue
				}
				return fmt.Errorf("%w: key %q in the draft of %s", config.ErrNotFound, k, c)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM config_items WHERE ns_id = ? AND item_key = ?`, ns.ID, k); err != nil {
				return fmt.Errorf("config: delete item %q: %w", k, err)
			}
			before = append(before, config.Change{Key: k, Old: maskIf(prev.Value, prev.Secret)})
			after = append(after, config.Change{Key: k, Op: "deleted"})
		}
		version = ns.DraftVersion
		if len(after) == 0 {
			return nil // nothing changed; no new version, no audit noise
		}
		res, err := tx.ExecContext(ctx, `UPDATE config_namespaces SET draft_version = draft_version + 1, last_editor = ? WHERE id = ? AND draft_version = ?`, actor, ns.ID, ns.DraftVersion)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			cur, _ := s.loadNS(ctx, tx, c)
			if cur != nil {
				return &config.ConflictError{Current: cur.DraftVersion, Given: ns.DraftVersion}
			}
			return config.ErrConflict
		}
		version = ns.DraftVersion + 1
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.item.edit", Resource: "config/" + c.String(), Before: audit.Value(before), After: audit.Value(after)})
	})
	return version, err
}

func maskIf(v string, secret bool) string {
	if secret {
		return config.Masked
	}
	return v
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func validUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func decodeSnapshot(raw string) (config.Snapshot, error) {
	var s config.Snapshot
	if raw == "" {
		return s, nil
	}
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, fmt.Errorf("config: corrupt snapshot: %w", err)
	}
	return s, nil
}

func encodeSnapshot(s config.Snapshot) string {
	sort.Slice(s, func(i, j int) bool { return s[i].Key < s[j].Key })
	if s == nil {
		s = config.Snapshot{}
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func snapshotOf(items []config.Item) config.Snapshot {
	out := make(config.Snapshot, 0, len(items))
	for _, it := range items {
		out = append(out, config.SnapItem{Key: it.Key, Value: it.Value, Secret: it.Secret})
	}
	return out.Sorted()
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
