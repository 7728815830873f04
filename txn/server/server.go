// Package server is the transaction coordinator of tangram server: global
// transactions in Saga and TCC modes, their branches and every call of a
// branch operation, in the platform's SQL store. Each decision (commit or
// abort) is written before it is acted on; phase two is driven by the
// server that claimed the transaction's row (owner, claim_until and a term
// that grows with every claim — a paused former driver's writes are
// refused), with retries backed off exponentially up to a cap and a
// max-attempts policy that parks the transaction as failed and raises an
// alarm. Every server scans for due and timed-out transactions, so a
// server killed mid-drive leaves nothing stuck: its claim runs out and
// another (or its restart) takes the row.
//
// Lock order: Server.mu alone.
package server

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/mail"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"

	"github.com/tangram-dev/tangram/internal/alarm"
	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/txn"
)

// ErrClosed is returned after Close, and by a second Start.
var ErrClosed = errcode.New(errcode.Unavailable, "txn/server: closed")

// Config configures the coordinator.
type Config struct {
	// Store holds the transactions (required).
	Store *store.Store
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// NodeName names this server in claims (default: a random name).
	NodeName string
	// ScanInterval is how often due retries, abandoned claims and
	// timed-out prepared transactions are looked for (default 1 s).
	ScanInterval time.Duration
	// ClaimTTL: a driver's claim on a transaction lasts this long past its
	// last write (default 30 s); a driver that dies is replaced after it.
	ClaimTTL time.Duration
	// Defaults for a transaction's Options: Timeout 60 s, Retry 1 s
	// doubling to RetryMax 60 s, MaxAttempts 50, BranchTimeout 10 s.
	Timeout, Retry, RetryMax, BranchTimeout time.Duration
	MaxAttempts                             int
	// Workers bounds the transactions driven at once (default 64).
	Workers int
	// HTTPClient calls branches at http(s) targets (default: a client
	// with keep-alives).
	HTTPClient *http.Client
	// Resolve finds a registry service's instances for rpc://SERVICE/…
	// targets (tangram server: its own registry; nil: rpc targets must
	// name a host:port).
	Resolve func(namespace, group, service string) (rpc.Resolver, error)
	// BranchDialOptions are used to dial RPC participants.
	BranchDialOptions []rpc.DialOption
	// Allow lists where branches may be called (txn.ParseAllow: host
	// and service names, *.domain, addresses and networks); empty: any
	// target. A branch outside it is refused when registered and, should
	// the list change across a restart, when called (a retryable error:
	// the transaction is parked after its attempts).
	Allow []string
	// Alarm is called when a transaction is parked as failed. Without it,
	// the server logs a warning and, when AlarmWebhook or AlarmEmails is
	// set, posts the transaction as JSON to the webhook and e-mails it
	// through SMTP (the scheduler's alarm machinery: a bounded queue,
	// each delivery retried).
	Alarm func(ctx context.Context, g txn.Global)
	// AlarmWebhook is an http(s) URL from the server's own configuration
	// (trusted: it may be an internal address).
	AlarmWebhook string
	AlarmEmails  []string
	// SMTP sends the alarm e-mails (needed with AlarmEmails).
	SMTP *alarm.SMTP
	// Registerer receives the metrics (optional).
	Registerer prometheus.Registerer
	// TracerProvider makes a client span per branch call, whose context
	// the call carries in the W3C traceparent header (default: the
	// process's global provider, which does nothing unless set).
	TracerProvider trace.TracerProvider
}

// DefaultConfig returns the defaults (Store still needed).
func DefaultConfig() Config {
	return Config{ScanInterval: time.Second, ClaimTTL: 30 * time.Second, Timeout: time.Minute, Retry: time.Second,
		RetryMax: time.Minute, BranchTimeout: 10 * time.Second, MaxAttempts: 50, Workers: 64}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.TracerProvider == nil {
		c.TracerProvider = otel.GetTracerProvider()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.NodeName == "" {
		c.NodeName = "txn-" + randomID()[:8]
	}
	if c.ScanInterval <= 0 {
		c.ScanInterval = d.ScanInterval
	}
	if c.ClaimTTL <= 0 {
		c.ClaimTTL = d.ClaimTTL
	}
	if c.Timeout <= 0 {
		c.Timeout = d.Timeout
	}
	if c.Retry <= 0 {
		c.Retry = d.Retry
	}
	if c.RetryMax <= 0 {
		c.RetryMax = d.RetryMax
	}
	if c.BranchTimeout <= 0 {
		c.BranchTimeout = d.BranchTimeout
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = d.MaxAttempts
	}
	if c.Workers <= 0 {
		c.Workers = d.Workers
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}}
	}
	return c
}

// Validate checks c; it changes nothing.
func (c Config) Validate() error {
	if c.Store == nil {
		return errors.New("txn/server: Config.Store is required")
	}
	if c.Retry > 0 && c.RetryMax > 0 && c.Retry > c.RetryMax {
		return fmt.Errorf("txn/server: Retry %v above RetryMax %v", c.Retry, c.RetryMax)
	}
	if c.AlarmWebhook != "" {
		if u, err := url.Parse(c.AlarmWebhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("txn/server: AlarmWebhook %q: want an http or https URL", alarm.RedactURL(c.AlarmWebhook))
		}
	}
	for _, e := range c.AlarmEmails {
		if _, err := mail.ParseAddress(e); err != nil {
			return fmt.Errorf("txn/server: alarm e-mail %q: %w", e, err)
		}
	}
	if len(c.AlarmEmails) > 0 && (c.SMTP == nil || c.SMTP.Addr == "") {
		return errors.New("txn/server: alarm e-mails need an SMTP server (tangram server --smtp-addr)")
	}
	if _, err := txn.ParseAllow(c.Allow); err != nil {
		return fmt.Errorf("txn/server: %w", err)
	}
	if len(c.Allow) > 0 && c.HTTPClient != nil {
		if _, ok := c.HTTPClient.Transport.(*http.Transport); !ok {
			return errors.New("txn/server: Allow needs Config.HTTPClient's Transport to be an *http.Transport (its connections are checked)")
		}
	}
	return nil
}

// Server is the coordinator.
type Server struct {
	cfg    Config
	st     *store.Store
	log    *slog.Logger
	holder string // this process in claims: node name and incarnation (fixed-width hex: later sorts after earlier)
	sem    chan struct{}
	m      metrics
	tracer trace.Tracer
	alarms *alarm.Sender // nil: Config.Alarm, or a log line only
	caller *txn.Caller
	apps   appCache // each transaction's app, for permission checks
	allow  *txn.Allow

	mu      sync.Mutex
	started bool
	closed  bool
	driving map[string]bool // xids being driven by this process
	waiters map[string][]*waiter
	stopCtx context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	kick    chan struct{}
}

// New makes a coordinator; Start starts its scanner.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	allow, _ := txn.ParseAllow(cfg.Allow) // checked by Validate
	if allow != nil {
		// Every HTTP branch connection is checked as it is made.
		tr := cfg.HTTPClient.Transport.(*http.Transport).Clone()
		tr.Proxy = nil // a proxy would connect for us, out of the check's sight
		tr.DialContext = allow.DialContext(&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second})
		hc := *cfg.HTTPClient
		hc.Transport = tr
		cfg.HTTPClient = &hc
	}
	s := &Server{cfg: cfg, st: cfg.Store, log: cfg.Logger, sem: make(chan struct{}, cfg.Workers),
		holder: fmt.Sprintf("%s#%016x", cfg.NodeName, time.Now().UnixNano()), driving: map[string]bool{},
		waiters: map[string][]*waiter{}, kick: make(chan struct{}, 1), m: newMetrics(),
		tracer: cfg.TracerProvider.Tracer("github.com/tangram-dev/tangram/txn/server"),
		allow:  allow,
		caller: &txn.Caller{HTTP: cfg.HTTPClient, Resolve: cfg.Resolve, DialOptions: cfg.BranchDialOptions, Allow: allow}}
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	if cfg.Registerer != nil {
		if err := s.m.register(cfg.Registerer); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Start starts the scanner that resumes due, abandoned and timed-out
// transactions.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.closed {
		return ErrClosed
	}
	if s.cfg.Alarm == nil && (s.cfg.AlarmWebhook != "" || len(s.cfg.AlarmEmails) > 0) {
		a, err := alarm.New(alarm.Config{SMTP: s.cfg.SMTP, UserAgent: "tangram-txn-alarm", Logger: s.log})
		if err != nil {
			return fmt.Errorf("txn: alarms: %w", err)
		}
		s.alarms = a
	}
	s.started = true
	s.goFunc(s.scanLoop)
	return nil
}

func (s *Server) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Shutdown stops scanning and waits, within ctx, for the transactions
// being driven; the claims of those still running when ctx ends are left
// to run out (another server resumes them).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	defer s.closeOutbound()
	select {
	case <-done:
		s.stop()
		return nil
	case <-ctx.Done():
		s.stop()
		<-done
		return ctx.Err()
	}
}

// closeOutbound stops the alarm sender and the RPC participants' clients
// once the drivers that use them ended.
func (s *Server) closeOutbound() {
	if s.alarms != nil {
		s.alarms.Close()
	}
	s.caller.Close()
}

// Close stops at once: calls in flight are abandoned (their transactions
// resume elsewhere once the claim runs out).
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	s.closeOutbound()
	return nil
}

func randomID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NewXID draws a transaction ID.
func NewXID() string { return randomID() }

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

// options fills a transaction's zero options from the server's defaults.
func (s *Server) options(o txn.Options) txn.Options {
	if o.TimeoutMs <= 0 {
		o.TimeoutMs = s.cfg.Timeout.Milliseconds()
	}
	if o.RetryMs <= 0 {
		o.RetryMs = s.cfg.Retry.Milliseconds()
	}
	if o.RetryMaxMs <= 0 {
		o.RetryMaxMs = s.cfg.RetryMax.Milliseconds()
	}
	if o.RetryMaxMs < o.RetryMs {
		o.RetryMaxMs = o.RetryMs
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = s.cfg.MaxAttempts
	}
	if o.BranchTimeoutMs <= 0 {
		o.BranchTimeoutMs = s.cfg.BranchTimeout.Milliseconds()
	}
	return o
}

func checkStep(allow *txn.Allow, mode txn.Mode, st txn.Step, n, i int) error {
	var need []string
	switch mode {
	case txn.ModeSaga:
		need = []string{st.Action, st.Compensate}
	case txn.ModeTCC, txn.ModeXA, txn.ModeAT:
		need = []string{st.Confirm, st.Cancel}
	}
	for _, t := range need {
		pt, err := txn.ParseTarget(t)
		if err == nil {
			err = allow.Check(pt)
		}
		if err != nil {
			return fmt.Errorf("step %d: %w", i, err)
		}
	}
	for _, a := range st.After {
		if a < 0 || a >= n || a == i {
			return fmt.Errorf("%w: step %d: after %d: want another step's index", txn.ErrBadRequest, i, a)
		}
	}
	return nil
}

// Begin creates a prepared global transaction (TCC), to which branches
// are registered before Submit or Abort.
func (s *Server) Begin(ctx context.Context, req txn.BeginRequest) (txn.Global, error) {
	if !req.Mode.Prepared() {
		return txn.Global{}, fmt.Errorf("%w: begin: mode %q: only tcc and xa transactions are begun first (a saga is submitted whole)", txn.ErrBadRequest, req.Mode)
	}
	if req.XID == "" {
		req.XID = NewXID()
	}
	if err := txn.ValidXID(req.XID); err != nil {
		return txn.Global{}, err
	}
	o := s.options(req.Options)
	now := store.NowMillis()
	g := txn.Global{XID: req.XID, Mode: req.Mode, App: req.App, Status: txn.StatusPrepared, Options: o, CreatedAt: now, UpdatedAt: now}
	opts, _ := json.Marshal(o)
	// The new transaction need not be flushed before the reply (relaxed):
	// nothing depends on it until a branch registers, and that write
	// (flushed) takes the store's log with it. A crash before then loses a
	// transaction without branches, which the caller learns at its first
	// Register.
	_, err := s.st.Batch(ctx, true, store.Write{
		Query: `INSERT INTO txn_globals (xid, mode, app, status, phase, options, reason, created_at, updated_at, next_at, timeout_at, owner, claim_until, term, branches)
		VALUES (?, ?, ?, ?, '', ?, '', ?, ?, 0, ?, '', 0, 0, 0)`,
		Args: []any{g.XID, g.Mode, g.App, g.Status, string(opts), now, now, now + o.TimeoutMs},
	})
	if store.IsUniqueViolation(err) {
		return txn.Global{}, errcode.New(errcode.AlreadyExists, "txn: transaction "+g.XID+" exists")
	}
	if err != nil {
		return txn.Global{}, fmt.Errorf("txn/server: begin: %w", err)
	}
	s.apps.put(g.XID, g.App)
	s.m.started.WithLabelValues(string(g.Mode)).Inc()
	return g, nil
}

// Register adds a branch to a prepared TCC, XA or AT transaction; its Try
// is the caller's to call next (AT: its local transaction commits next).
// An AT branch's row locks are taken in the same transaction: when one is
// held by another transaction nothing is registered and the conflict is
// returned (the participant waits and tries again).
func (s *Server) Register(ctx context.Context, req txn.RegisterRequest) (txn.RegisterReply, error) {
	keys, err := checkLocks(req.Resource, req.Locks)
	if err != nil {
		return txn.RegisterReply{}, err
	}
	if len(keys) == 0 {
		return s.registerBranch(ctx, req)
	}
	if s.st.Dialect() == store.Postgres {
		return s.registerLocked(ctx, req, keys)
	}
	var id int
	var conflict *txn.LockConflict
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		var mode, status string
		var n int
		err := tx.QueryRowContext(ctx, `SELECT mode, status, branches FROM txn_globals WHERE xid = ?`+forUpdate(tx), req.XID).Scan(&mode, &status, &n)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: transaction %s", txn.ErrNotFound, req.XID)
		}
		if err != nil {
			return err
		}
		if txn.Status(status) != txn.StatusPrepared {
			return fmt.Errorf("%w: register a branch of %s: it is %s", txn.ErrState, req.XID, status)
		}
		if err := checkStep(s.allow, txn.Mode(mode), req.Step, n+1, n); err != nil {
			return err
		}
		if len(keys) > 0 && txn.Mode(mode) != txn.ModeAT {
			return fmt.Errorf("%w: register a branch of %s: row locks are for AT transactions, not %s", txn.ErrBadRequest, req.XID, mode)
		}
		id = n
		if len(keys) > 0 {
			if conflict, err = s.lockRows(ctx, tx, req.XID, id, req.Resource, keys); err != nil {
				return err
			}
			if conflict != nil {
				return errLockHeld
			}
		}
		step, _ := json.Marshal(req.Step)
		if _, err := tx.ExecContext(ctx, `UPDATE txn_globals SET branches = ?, updated_at = ? WHERE xid = ?`, n+1, store.NowMillis(), req.XID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO txn_branches (xid, branch, step, done, attempts) VALUES (?, ?, ?, '', 0)`, req.XID, id, string(step))
		return err
	})
	if conflict != nil || (len(keys) > 0 && store.IsUniqueViolation(err)) {
		// Taken by another transaction (a unique violation: at the same
		// moment, by a registration not yet committed when we looked).
		if conflict == nil {
			conflict = &txn.LockConflict{Resource: req.Resource, Key: keys[0]}
		}
		s.m.lockConflicts.WithLabelValues(req.Resource).Inc()
		return txn.RegisterReply{Branch: -1, Conflict: conflict}, nil
	}
	if err != nil {
		return txn.RegisterReply{}, fmt.Errorf("txn/server: register: %w", err)
	}
	return txn.RegisterReply{Branch: id}, nil
}

// registerBranch registers a branch without row locks: one batch — the
// transaction's branch count taken (only while it is prepared), the
// branch inserted with the number it took, and both read back — so one
// round trip on PostgreSQL.
func (s *Server) registerBranch(ctx context.Context, req txn.RegisterRequest) (txn.RegisterReply, error) {
	if len(req.Step.After) > 0 {
		return txn.RegisterReply{}, fmt.Errorf("%w: register a branch of %s: after is for saga steps", txn.ErrBadRequest, req.XID)
	}
	if err := checkStep(s.allow, txn.ModeTCC, req.Step, 0, 0); err != nil { // every prepared mode needs the same targets
		return txn.RegisterReply{}, err
	}
	step, _ := json.Marshal(req.Step)
	var status string
	var n int
	res, err := s.st.Batch(ctx, false,
		store.Write{Query: `UPDATE txn_globals SET branches = branches + 1, updated_at = ? WHERE xid = ? AND status = ?`,
			Args: []any{store.NowMillis(), req.XID, txn.StatusPrepared}},
		store.Write{Query: `INSERT INTO txn_branches (xid, branch, step, done, attempts) SELECT xid, branches - 1, ?, '', 0 FROM txn_globals WHERE xid = ? AND status = ?`,
			Args: []any{string(step), req.XID, txn.StatusPrepared}},
		store.Write{Query: `SELECT status, branches FROM txn_globals WHERE xid = ?`, Args: []any{req.XID}, Scan: []any{&status, &n}},
	)
	switch {
	case err != nil:
		return txn.RegisterReply{}, fmt.Errorf("txn/server: register: %w", err)
	case res[2] == 0:
		return txn.RegisterReply{}, fmt.Errorf("txn/server: register: %w: transaction %s", txn.ErrNotFound, req.XID)
	case res[0] == 0:
		return txn.RegisterReply{}, fmt.Errorf("txn/server: register: %w: register a branch of %s: it is %s", txn.ErrState, req.XID, status)
	}
	return txn.RegisterReply{Branch: n - 1}, nil
}

// registerLocked registers an AT branch with its row locks on PostgreSQL
// in one batch (one round trip where the transaction of Register takes
// seven): the branch count taken only while the transaction is a prepared
// AT one, the branch inserted with the number it took, the keys this
// transaction does not hold yet inserted, and the transaction read back.
// A key another transaction holds fails the insert on the primary key,
// which rolls the whole batch back; its holder is then looked up for the
// conflict returned.
func (s *Server) registerLocked(ctx context.Context, req txn.RegisterRequest, keys []string) (txn.RegisterReply, error) {
	if len(req.Step.After) > 0 {
		return txn.RegisterReply{}, fmt.Errorf("%w: register a branch of %s: after is for saga steps", txn.ErrBadRequest, req.XID)
	}
	if err := checkStep(s.allow, txn.ModeAT, req.Step, 0, 0); err != nil {
		return txn.RegisterReply{}, err
	}
	step, _ := json.Marshal(req.Step)
	var status, mode string
	var n int
	live := []any{req.XID, txn.StatusPrepared, txn.ModeAT}
	res, err := s.st.Batch(ctx, false,
		store.Write{Query: `UPDATE txn_globals SET branches = branches + 1, updated_at = ? WHERE xid = ? AND status = ? AND mode = ?`,
			Args: append([]any{store.NowMillis()}, live...)},
		store.Write{Query: `INSERT INTO txn_branches (xid, branch, step, done, attempts) SELECT xid, branches - 1, ?, '', 0 FROM txn_globals WHERE xid = ? AND status = ? AND mode = ?`,
			Args: append([]any{string(step)}, live...)},
		store.Write{Query: `INSERT INTO txn_locks (resource, row_key, xid, branch)
		SELECT ?, k.row_key, g.xid, g.branches - 1 FROM txn_globals g CROSS JOIN unnest(?::text[]) AS k(row_key)
		WHERE g.xid = ? AND g.status = ? AND g.mode = ?
		AND NOT EXISTS (SELECT 1 FROM txn_locks l WHERE l.resource = ? AND l.row_key = k.row_key AND l.xid = g.xid)`,
			Args: append(append([]any{req.Resource, keys}, live...), req.Resource)},
		store.Write{Query: `SELECT status, mode, branches FROM txn_globals WHERE xid = ?`, Args: []any{req.XID}, Scan: []any{&status, &mode, &n}},
	)
	switch {
	case store.IsUniqueViolation(err):
		rep, lerr := s.Locks(ctx, txn.LocksRequest{XID: req.XID, Resource: req.Resource, Keys: keys})
		if lerr != nil {
			return txn.RegisterReply{}, fmt.Errorf("txn/server: register: %w", lerr)
		}
		c := rep.Conflict
		if c == nil { // freed since: the participant tries again
			c = &txn.LockConflict{Resource: req.Resource, Key: keys[0]}
			s.m.lockConflicts.WithLabelValues(req.Resource).Inc()
		}
		return txn.RegisterReply{Branch: -1, Conflict: c}, nil
	case err != nil:
		return txn.RegisterReply{}, fmt.Errorf("txn/server: register: %w", err)
	case res[3] == 0:
		return txn.RegisterReply{}, fmt.Errorf("txn/server: register: %w: transaction %s", txn.ErrNotFound, req.XID)
	case txn.Mode(mode) != txn.ModeAT:
		return txn.RegisterReply{}, fmt.Errorf("txn/server: register: %w: register a branch of %s: row locks are for AT transactions, not %s", txn.ErrBadRequest, req.XID, mode)
	case res[0] == 0:
		return txn.RegisterReply{}, fmt.Errorf("txn/server: register: %w: register a branch of %s: it is %s", txn.ErrState, req.XID, status)
	}
	return txn.RegisterReply{Branch: n - 1}, nil
}

var errLockHeld = errors.New("txn/server: a row lock is held")

// checkLocks validates a lock set and returns its keys sorted without
// duplicates (sorted, so two registrations take common rows in one order).
func checkLocks(resource string, locks []string) ([]string, error) {
	if len(locks) == 0 {
		return nil, nil
	}
	if resource == "" || len(resource) > txn.MaxLockKeyLen {
		return nil, fmt.Errorf("%w: locks: resource %q: want 1-%d bytes", txn.ErrBadRequest, resource, txn.MaxLockKeyLen)
	}
	if len(locks) > txn.MaxLocks {
		return nil, fmt.Errorf("%w: locks: %d rows: at most %d per branch", txn.ErrBadRequest, len(locks), txn.MaxLocks)
	}
	keys := slices.Clone(locks)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	for _, k := range keys {
		if k == "" || len(k) > txn.MaxLockKeyLen {
			return nil, fmt.Errorf("%w: locks: key %.40q: want 1-%d bytes", txn.ErrBadRequest, k, txn.MaxLockKeyLen)
		}
	}
	return keys, nil
}

// lockRows takes keys of resource for xid's branch inside tx, unless one
// is held by another transaction (returned). Keys xid holds already are
// kept (a later branch of the same transaction writing the same row).
func (s *Server) lockRows(ctx context.Context, tx *store.Tx, xid string, branch int, resource string, keys []string) (*txn.LockConflict, error) {
	held := make(map[string]bool, len(keys))
	for chunk := range slices.Chunk(keys, 500) {
		q := `SELECT row_key, xid FROM txn_locks WHERE resource = ? AND row_key IN (?` + strings.Repeat(", ?", len(chunk)-1) + `)` + forUpdate(tx)
		args := make([]any, 0, len(chunk)+1)
		args = append(args, resource)
		for _, k := range chunk {
			args = append(args, k)
		}
		rows, err := tx.QueryContext(ctx, q, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var k, holder string
			if err := rows.Scan(&k, &holder); err != nil {
				rows.Close()
				return nil, err
			}
			if holder != xid {
				rows.Close()
				return &txn.LockConflict{Resource: resource, Key: k, XID: holder}, nil
			}
			held[k] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	var todo []string
	for _, k := range keys {
		if !held[k] {
			todo = append(todo, k)
		}
	}
	for chunk := range slices.Chunk(todo, 200) {
		q := `INSERT INTO txn_locks (resource, row_key, xid, branch) VALUES (?, ?, ?, ?)` + strings.Repeat(", (?, ?, ?, ?)", len(chunk)-1)
		args := make([]any, 0, 4*len(chunk))
		for _, k := range chunk {
			args = append(args, resource, k, xid, branch)
		}
		if _, err := tx.ExecContext(ctx, q, args...); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// Locks reports the first of req.Keys held by a transaction other than
// req.XID (AT's SELECT … FOR UPDATE waits until there is none).
func (s *Server) Locks(ctx context.Context, req txn.LocksRequest) (txn.LocksReply, error) {
	keys, err := checkLocks(req.Resource, req.Keys)
	if err != nil || len(keys) == 0 {
		return txn.LocksReply{}, err
	}
	for chunk := range slices.Chunk(keys, 500) {
		q := `SELECT row_key, xid FROM txn_locks WHERE resource = ? AND row_key IN (?` + strings.Repeat(", ?", len(chunk)-1) + `) AND xid <> ?`
		args := make([]any, 0, len(chunk)+2)
		args = append(args, req.Resource)
		for _, k := range chunk {
			args = append(args, k)
		}
		args = append(args, req.XID)
		var c txn.LockConflict
		err := s.st.QueryRowContext(ctx, q+` LIMIT 1`, args...).Scan(&c.Key, &c.XID)
		if err == nil {
			c.Resource = req.Resource
			s.m.lockConflicts.WithLabelValues(req.Resource).Inc()
			return txn.LocksReply{Conflict: &c}, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return txn.LocksReply{}, fmt.Errorf("txn/server: locks: %w", err)
		}
	}
	return txn.LocksReply{}, nil
}

// unlock releases every row lock of xid.
func unlock(ctx context.Context, ex interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, xid string) error {
	_, err := ex.ExecContext(ctx, `DELETE FROM txn_locks WHERE xid = ?`, xid)
	return err
}

// forUpdate locks the row read where the dialect can (SQLite's writer
// lock already serialises).
func forUpdate(tx *store.Tx) string {
	if tx.Dialect() == store.SQLite {
		return ""
	}
	return " FOR UPDATE"
}

// Submit commits: a TCC transaction's branches are to be confirmed; a
// saga (Steps) is created and run. The decision is durable when Submit
// returns; phase two runs at once on this server.
func (s *Server) Submit(ctx context.Context, req txn.SubmitRequest) (txn.Global, error) {
	if len(req.Steps) > 0 || req.Mode == txn.ModeSaga {
		if req.XID == "" {
			req.XID = NewXID()
		}
		g, err := s.createSaga(ctx, req)
		if err != nil {
			return txn.Global{}, err
		}
		return s.afterDecision(ctx, req.XID, req.Wait, req.WaitMs, &preclaim{term: 1, g: &g})
	}
	pre, err := s.decideCommit(ctx, req.XID, req.Mode == txn.ModeAT)
	if err != nil {
		return txn.Global{}, fmt.Errorf("txn/server: submit: %w", err)
	}
	return s.afterDecision(ctx, req.XID, req.Wait, req.WaitMs, pre)
}

// decideCommit moves a prepared transaction to committing, durably, due
// now and claimed by this server, which drives it next: one batch that
// also reads the transaction back (and, for AT, frees its row locks: an
// AT branch's writes are final once the commit is decided, and phase two
// only deletes undo images; were this lost, the end of phase two frees
// them) and its branches. The commit said twice is no error: the
// transaction is then driven by whoever claimed it (nil preclaim).
func (s *Server) decideCommit(ctx context.Context, xid string, at bool) (*preclaim, error) {
	now := store.NowMillis()
	var g txn.Global
	var opts string
	var term int64
	writes := []store.Write{
		{Query: `UPDATE txn_globals SET status = ?, phase = 'commit', reason = '', updated_at = ?, next_at = ?, timeout_at = 0, owner = ?, claim_until = ?, term = term + 1 WHERE xid = ? AND status = ?`,
			Args: []any{txn.StatusCommitting, now, now, s.holder, now + s.cfg.ClaimTTL.Milliseconds(), xid, txn.StatusPrepared}},
		{Query: `SELECT term, ` + globalCols + ` FROM txn_globals WHERE xid = ?`, Args: []any{xid},
			Scan: append([]any{&term}, globalDest(&g, &opts)...)},
	}
	// The branches, read in the same round trip; they are settled: a
	// transaction that is no longer prepared takes no more.
	writes = append(writes, store.Write{Query: branchesQuery, Args: []any{xid},
		Each: func(scan func(...any) error) error {
			if scan == nil { // a run of the batch starts
				g.Branches = nil
				return nil
			}
			return appendBranch(&g.Branches, xid, scan)
		}})
	if at {
		writes = append(writes, store.Write{Query: `DELETE FROM txn_locks WHERE xid = ? AND EXISTS (SELECT 1 FROM txn_globals WHERE xid = ? AND status = ?)`,
			Args: []any{xid, xid, txn.StatusCommitting}})
	}
	n, err := s.st.Batch(ctx, false, writes...)
	switch {
	case err != nil:
		return nil, err
	case n[1] == 0:
		return nil, fmt.Errorf("%w: transaction %s", txn.ErrNotFound, xid)
	case n[0] == 0 && g.Status == txn.StatusCommitting:
		return nil, nil // said twice: the same decision
	case n[0] == 0:
		return nil, fmt.Errorf("%w: %s is %s, not %s", txn.ErrState, xid, g.Status, txn.StatusPrepared)
	}
	if err := json.Unmarshal([]byte(opts), &g.Options); err != nil {
		return nil, fmt.Errorf("txn/server: %s: options: %w", xid, err)
	}
	return &preclaim{term: term, g: &g}, nil
}

// createSaga stores a saga, committing, claimed (term 1) by this server,
// which drives it next.
func (s *Server) createSaga(ctx context.Context, req txn.SubmitRequest) (txn.Global, error) {
	if req.Mode != "" && req.Mode != txn.ModeSaga {
		return txn.Global{}, fmt.Errorf("%w: submit: steps are for a saga; a %s transaction registers branches", txn.ErrBadRequest, req.Mode)
	}
	if len(req.Steps) == 0 {
		return txn.Global{}, fmt.Errorf("%w: submit: a saga needs steps", txn.ErrBadRequest)
	}
	if len(req.Steps) > maxBranches {
		return txn.Global{}, fmt.Errorf("%w: submit: %d steps; at most %d", txn.ErrBadRequest, len(req.Steps), maxBranches)
	}
	if err := txn.ValidXID(req.XID); err != nil {
		return txn.Global{}, err
	}
	for i, st := range req.Steps {
		if err := checkStep(s.allow, txn.ModeSaga, st, len(req.Steps), i); err != nil {
			return txn.Global{}, err
		}
	}
	o := s.options(req.Options)
	opts, _ := json.Marshal(o)
	now := store.NowMillis()
	g := txn.Global{XID: req.XID, Mode: txn.ModeSaga, App: req.App, Status: txn.StatusCommitting, Phase: "commit", Options: o,
		CreatedAt: now, UpdatedAt: now, NextAt: now, Branches: make([]txn.Branch, len(req.Steps))}
	for i, st := range req.Steps {
		g.Branches[i] = txn.Branch{ID: i, Step: st}
	}
	// The transaction and every branch: two statements, one batch.
	var q strings.Builder
	q.WriteString(`INSERT INTO txn_branches (xid, branch, step, done, attempts) VALUES `)
	args := make([]any, 0, 3*len(req.Steps))
	for i, st := range req.Steps {
		b, _ := json.Marshal(st)
		if i > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?, ?, ?, '', 0)")
		args = append(args, req.XID, i, string(b))
	}
	_, err := s.st.Batch(ctx, false, store.Write{
		Query: `INSERT INTO txn_globals (xid, mode, app, status, phase, options, reason, created_at, updated_at, next_at, timeout_at, owner, claim_until, term, branches)
			VALUES (?, ?, ?, ?, 'commit', ?, '', ?, ?, ?, 0, ?, ?, 1, ?)`,
		Args: []any{req.XID, txn.ModeSaga, req.App, txn.StatusCommitting, string(opts), now, now, now, s.holder, now + s.cfg.ClaimTTL.Milliseconds(), len(req.Steps)},
	}, store.Write{Query: q.String(), Args: args})
	if store.IsUniqueViolation(err) {
		return txn.Global{}, errcode.New(errcode.AlreadyExists, "txn: transaction "+req.XID+" exists")
	}
	if err != nil {
		return txn.Global{}, fmt.Errorf("txn/server: submit saga: %w", err)
	}
	s.apps.put(g.XID, g.App)
	s.m.started.WithLabelValues(string(txn.ModeSaga)).Inc()
	return g, nil
}

// maxBranches bounds a transaction's branches (a saga's steps are
// inserted in one statement).
const maxBranches = 1000

// decide moves xid from state from to committing or aborting, durably,
// and makes phase two due now (the scanner of any server claims it; a
// commit this server drives is decideCommit).
func (s *Server) decide(ctx context.Context, xid string, from, to txn.Status, reason string) error {
	phase := "commit"
	if to == txn.StatusAborting {
		phase = "abort"
	}
	now := store.NowMillis()
	q := `UPDATE txn_globals SET status = ?, phase = ?, reason = ?, updated_at = ?, next_at = ?, timeout_at = 0 WHERE xid = ? AND status = ?`
	args := []any{to, phase, reason, now, now, xid, from}
	res, err := s.st.ExecContext(ctx, q, args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return nil
	}
	g, err := s.load(ctx, xid, false)
	if err != nil {
		return err
	}
	if g.Status == to {
		return nil // said twice: the same decision
	}
	return fmt.Errorf("%w: %s is %s, not %s", txn.ErrState, xid, g.Status, from)
}

// Abort rolls back: a prepared transaction (TCC: cancel its branches), or
// a saga parked as failed while committing (its done actions are
// compensated). A TCC or XA transaction that was submitted cannot be
// aborted: some branches may be committed.
func (s *Server) Abort(ctx context.Context, req txn.XIDRequest) (txn.Global, error) {
	reason := req.Reason
	if reason == "" {
		reason = "aborted by request"
	}
	g, err := s.load(ctx, req.XID, false)
	if err != nil {
		return txn.Global{}, err
	}
	switch {
	case g.Status == txn.StatusPrepared:
		err = s.decide(ctx, req.XID, txn.StatusPrepared, txn.StatusAborting, reason)
	case g.Status == txn.StatusAborting || g.Status == txn.StatusAborted:
	case g.Mode == txn.ModeSaga && (g.Status == txn.StatusFailed || g.Status == txn.StatusCommitting):
		err = s.decide(ctx, req.XID, g.Status, txn.StatusAborting, reason)
	default:
		err = fmt.Errorf("%w: abort %s: it is %s (%s)", txn.ErrState, req.XID, g.Status, g.Mode)
	}
	if err != nil {
		return txn.Global{}, fmt.Errorf("txn/server: abort: %w", err)
	}
	return s.afterDecision(ctx, req.XID, req.Wait, req.WaitMs, nil)
}

// Retry resumes a failed (parked) transaction in its decided direction,
// or makes a pending retry due now; attempts start again from zero.
func (s *Server) Retry(ctx context.Context, req txn.XIDRequest) (txn.Global, error) {
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		var status, phase string
		err := tx.QueryRowContext(ctx, `SELECT status, phase FROM txn_globals WHERE xid = ?`+forUpdate(tx), req.XID).Scan(&status, &phase)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: transaction %s", txn.ErrNotFound, req.XID)
		}
		if err != nil {
			return err
		}
		to := txn.Status(status)
		switch to {
		case txn.StatusFailed:
			to = txn.StatusCommitting
			if phase == "abort" {
				to = txn.StatusAborting
			}
		case txn.StatusCommitting, txn.StatusAborting:
		default:
			return fmt.Errorf("%w: retry %s: it is %s", txn.ErrState, req.XID, status)
		}
		now := store.NowMillis()
		if _, err := tx.ExecContext(ctx, `UPDATE txn_globals SET status = ?, next_at = ?, updated_at = ? WHERE xid = ?`, to, now, now, req.XID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE txn_branches SET attempts = 0 WHERE xid = ?`, req.XID)
		return err
	})
	if err != nil {
		return txn.Global{}, fmt.Errorf("txn/server: retry: %w", err)
	}
	return s.afterDecision(ctx, req.XID, req.Wait, req.WaitMs, nil)
}

// afterDecision starts phase two here and, with wait, waits for its end
// (or waitMs, default 30 s), returning the transaction as it stands.
func (s *Server) afterDecision(ctx context.Context, xid string, wait bool, waitMs int64, pre *preclaim) (txn.Global, error) {
	var w *waiter
	if wait {
		w = s.waitFor(xid)
		defer func() { s.unwait(xid, w) }()
	}
	var decided *txn.Global
	if !wait && pre != nil {
		// The reply is the decision as written: no read of it back. A
		// copy, taken before the driver starts changing its own.
		g := *pre.g
		g.Branches = slices.Clone(g.Branches)
		decided = &g
	}
	started := s.startDrive(xid, pre)
	if decided != nil {
		return *decided, nil
	}
	if !started && pre != nil {
		// Not driven here (closing): the claim runs out and the scanner
		// of any server takes it.
		s.log.Debug("txn: decided but not driving here", "xid", xid)
	}
	if wait {
		d := 30 * time.Second
		if waitMs > 0 {
			d = ms(waitMs)
		}
		t := time.NewTimer(d)
		defer t.Stop()
		for {
			if started {
				started = false // this server is driving it: its end will wake us
			} else {
				g, err := s.load(ctx, xid, false)
				if err != nil || g.Status.Final() || g.Status == txn.StatusFailed || (g.NextAt > store.NowMillis() && !s.isDriving(xid)) {
					return g, err
				}
			}
			select {
			case <-w.done:
				if w.g != nil {
					return *w.g, nil // ended or parked here: as written
				}
				s.unwait(xid, w)
				w = s.waitFor(xid)
			case <-t.C:
				return s.load(ctx, xid, false)
			case <-ctx.Done():
				return txn.Global{}, ctx.Err()
			case <-time.After(s.cfg.ScanInterval): // another server may be driving it
			}
		}
	}
	return s.load(ctx, xid, false)
}

// waiter is one caller waiting for a transaction's next step: done is
// closed then, with g set when the driver here ended or parked it.
type waiter struct {
	done chan struct{}
	g    *txn.Global
}

func (s *Server) waitFor(xid string) *waiter {
	w := &waiter{done: make(chan struct{})}
	s.mu.Lock()
	s.waiters[xid] = append(s.waiters[xid], w)
	s.mu.Unlock()
	return w
}

func (s *Server) unwait(xid string, w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ws := s.waiters[xid]
	for i, x := range ws {
		if x == w {
			s.waiters[xid] = append(ws[:i], ws[i+1:]...)
			break
		}
	}
	if len(s.waiters[xid]) == 0 {
		delete(s.waiters, xid)
	}
}

// notify wakes those waiting on xid, handing them g (nil: they read the
// store).
func (s *Server) notify(xid string, g *txn.Global) {
	s.mu.Lock()
	ws := s.waiters[xid]
	delete(s.waiters, xid)
	s.mu.Unlock()
	for _, w := range ws {
		if g != nil {
			c := *g
			w.g = &c
		}
		close(w.done)
	}
}

func (s *Server) isDriving(xid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.driving[xid]
}

const globalCols = `xid, mode, app, status, phase, options, reason, created_at, updated_at, next_at`

// globalDest are the destinations of globalCols (the options' JSON goes
// to opts).
func globalDest(g *txn.Global, opts *string) []any {
	return []any{&g.XID, &g.Mode, &g.App, &g.Status, &g.Phase, opts, &g.Reason, &g.CreatedAt, &g.UpdatedAt, &g.NextAt}
}

func scanGlobal(r interface{ Scan(...any) error }) (txn.Global, error) {
	var g txn.Global
	var opts string
	if err := r.Scan(globalDest(&g, &opts)...); err != nil {
		return g, err
	}
	if err := json.Unmarshal([]byte(opts), &g.Options); err != nil {
		return g, fmt.Errorf("txn/server: %s: options: %w", g.XID, err)
	}
	return g, nil
}

// Get returns a transaction with its branches and timeline.
func (s *Server) Get(ctx context.Context, xid string) (txn.Global, error) {
	return s.load(ctx, xid, true)
}

func (s *Server) load(ctx context.Context, xid string, events bool) (txn.Global, error) {
	g, err := scanGlobal(s.st.QueryRowContext(ctx, `SELECT `+globalCols+` FROM txn_globals WHERE xid = ?`, xid))
	if errors.Is(err, sql.ErrNoRows) {
		return txn.Global{}, fmt.Errorf("%w: transaction %s", txn.ErrNotFound, xid)
	}
	if err != nil {
		return txn.Global{}, fmt.Errorf("txn/server: get %s: %w", xid, err)
	}
	if g.Branches, err = s.branches(ctx, s.st, xid); err != nil {
		return txn.Global{}, err
	}
	if !events {
		return g, nil
	}
	rows, err := s.st.QueryContext(ctx, `SELECT branch, op, at, ms, result, error FROM txn_events WHERE xid = ? ORDER BY id`, xid)
	if err != nil {
		return txn.Global{}, fmt.Errorf("txn/server: get %s: %w", xid, err)
	}
	defer rows.Close()
	for rows.Next() {
		var e txn.Event
		if err := rows.Scan(&e.Branch, &e.Op, &e.At, &e.Ms, &e.Result, &e.Error); err != nil {
			return txn.Global{}, err
		}
		g.Events = append(g.Events, e)
	}
	return g, rows.Err()
}

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func (s *Server) branches(ctx context.Context, q querier, xid string) ([]txn.Branch, error) {
	rows, err := q.QueryContext(ctx, branchesQuery, xid)
	if err != nil {
		return nil, fmt.Errorf("txn/server: branches of %s: %w", xid, err)
	}
	defer rows.Close()
	var out []txn.Branch
	for rows.Next() {
		if err := appendBranch(&out, xid, rows.Scan); err != nil {
			return nil, err
		}
	}
	return out, rows.Err()
}

// branchesQuery reads a transaction's branches (appendBranch scans a row).
const branchesQuery = `SELECT branch, step, done, attempts FROM txn_branches WHERE xid = ? ORDER BY branch`

// appendBranch reads a row of branchesQuery with scan onto out.
func appendBranch(out *[]txn.Branch, xid string, scan func(dest ...any) error) error {
	var b txn.Branch
	var step, done string
	if err := scan(&b.ID, &step, &done, &b.Attempts); err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(step), &b.Step); err != nil {
		return fmt.Errorf("txn/server: %s branch %d: %w", xid, b.ID, err)
	}
	for _, d := range strings.Split(done, ",") {
		if d != "" {
			b.Done = append(b.Done, txn.Op(d))
		}
	}
	*out = append(*out, b)
	return nil
}

// List returns a page of transactions, newest first.
func (s *Server) List(ctx context.Context, req txn.ListRequest) (txn.ListReply, error) {
	limit := req.Limit
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	q := `SELECT ` + globalCols + ` FROM txn_globals WHERE 1 = 1`
	var args []any
	if req.Status != "" {
		q += ` AND status = ?`
		args = append(args, req.Status)
	}
	if req.Mode != "" {
		q += ` AND mode = ?`
		args = append(args, req.Mode)
	}
	if req.App != "" {
		q += ` AND app = ?`
		args = append(args, req.App)
	}
	if req.Cursor != "" {
		var at int64
		if err := s.st.QueryRowContext(ctx, `SELECT created_at FROM txn_globals WHERE xid = ?`, req.Cursor).Scan(&at); err != nil {
			return txn.ListReply{}, fmt.Errorf("%w: cursor %q: no such transaction", txn.ErrBadRequest, req.Cursor)
		}
		q += ` AND (created_at < ? OR (created_at = ? AND xid < ?))`
		args = append(args, at, at, req.Cursor)
	}
	q += fmt.Sprintf(` ORDER BY created_at DESC, xid DESC LIMIT %d`, limit+1)
	rows, err := s.st.QueryContext(ctx, q, args...)
	if err != nil {
		return txn.ListReply{}, fmt.Errorf("txn/server: list: %w", err)
	}
	defer rows.Close()
	var out txn.ListReply
	for rows.Next() {
		g, err := scanGlobal(rows)
		if err != nil {
			return txn.ListReply{}, err
		}
		out.Items = append(out.Items, g)
	}
	if err := rows.Err(); err != nil {
		return txn.ListReply{}, err
	}
	if len(out.Items) > limit {
		out.Items = out.Items[:limit]
		out.Next = out.Items[limit-1].XID
	}
	return out, nil
}

// Count is how many transactions of a mode are in a state.
type Count struct {
	Mode   txn.Mode   `json:"mode"`
	Status txn.Status `json:"status"`
	N      int        `json:"n"`
}

// Counts returns the number of transactions by mode and state.
func (s *Server) Counts(ctx context.Context) ([]Count, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT mode, status, COUNT(*) FROM txn_globals GROUP BY mode, status ORDER BY mode, status`)
	if err != nil {
		return nil, fmt.Errorf("txn/server: counts: %w", err)
	}
	defer rows.Close()
	var out []Count
	for rows.Next() {
		var c Count
		if err := rows.Scan(&c.Mode, &c.Status, &c.N); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
