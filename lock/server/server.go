// Package server is the lock component of tangram server: ZooKeeper's
// lock semantics on the platform's SQL store. Clients open sessions and
// keep them alive over RPC; a node is persistent or ephemeral (deleted
// when its session expires or closes) and optionally sequential (its name
// ends with the parent's next counter value); a lock is a parent whose
// ephemeral sequential children queue for it — the first holds it, each
// other waits for its predecessor's deletion only (no herd), and the
// node's sequence number is the fencing token. State lives in the store,
// so several servers on one PostgreSQL or MySQL serve the same locks and a
// restart loses nothing; a deletion wakes the waiters on this server at
// once and, on PostgreSQL, on the others through NOTIFY (elsewhere they
// re-check every PollInterval).
//
// Lock order: Server.mu alone.
package server

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/lock"
)

// ErrClosed is returned after Close, and by a second Start.
var ErrClosed = errcode.New(errcode.Unavailable, "lock/server: closed")

// Config configures the lock component.
type Config struct {
	// Store holds the sessions and nodes (required).
	Store *store.Store
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// MinTTL and MaxTTL bound a session's TTL (defaults 1 s and 5 min;
	// ZooKeeper: 2 and 20 ticks); DefaultTTL is used when a client asks
	// for none (10 s).
	MinTTL, MaxTTL, DefaultTTL time.Duration
	// SweepInterval is how often expired sessions are looked for (default
	// 200 ms): a session ends between its expiry and that much later.
	SweepInterval time.Duration
	// PollInterval is how often a waiter re-checks when no wake-up can
	// reach it from another server (default 500 ms; PostgreSQL's NOTIFY
	// reaches it at once).
	PollInterval time.Duration
	// MaxWait caps one long-poll wait (default 30 s).
	MaxWait time.Duration
}

// DefaultConfig returns the defaults (Store still needed).
func DefaultConfig() Config {
	return Config{MinTTL: time.Second, MaxTTL: 5 * time.Minute, DefaultTTL: 10 * time.Second,
		SweepInterval: 200 * time.Millisecond, PollInterval: 500 * time.Millisecond, MaxWait: 30 * time.Second}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.MinTTL <= 0 {
		c.MinTTL = d.MinTTL
	}
	if c.MaxTTL <= 0 {
		c.MaxTTL = d.MaxTTL
	}
	if c.DefaultTTL <= 0 {
		c.DefaultTTL = d.DefaultTTL
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = d.SweepInterval
	}
	if c.PollInterval <= 0 {
		c.PollInterval = d.PollInterval
	}
	if c.MaxWait <= 0 {
		c.MaxWait = d.MaxWait
	}
	return c
}

// Validate checks c; it changes nothing.
func (c Config) Validate() error {
	if c.Store == nil {
		return errors.New("lock/server: Config.Store is required")
	}
	if c.MinTTL > 0 && c.MaxTTL > 0 && c.MinTTL > c.MaxTTL {
		return fmt.Errorf("lock/server: MinTTL %v above MaxTTL %v", c.MinTTL, c.MaxTTL)
	}
	if c.DefaultTTL > 0 && ((c.MinTTL > 0 && c.DefaultTTL < c.MinTTL) || (c.MaxTTL > 0 && c.DefaultTTL > c.MaxTTL)) {
		return fmt.Errorf("lock/server: DefaultTTL %v outside [MinTTL, MaxTTL]", c.DefaultTTL)
	}
	return nil
}

// Server is the lock component.
type Server struct {
	cfg Config
	st  *store.Store
	log *slog.Logger

	mu       sync.Mutex
	started  bool
	closed   bool
	watchers map[string]map[chan struct{}]struct{} // path → waiters for its deletion
	gen      chan struct{}                         // closed and replaced on a wake-all (another server deleted)
	stop     context.CancelFunc
	stopCtx  context.Context
	wg       sync.WaitGroup
	ops      chan *op // writes for the group committer
	q        stmts
}

// stmts are the hot paths' statements, prepared once per connection.
type stmts struct {
	session, seqNext, seqGet, seqBump, seqInsert, insertNode, keyed, anyNode, pred, get, del *store.Stmt
}

func newStmts(st *store.Store) stmts {
	var bump *store.Stmt
	if st.Dialect() != store.MySQL { // MySQL and MariaDB have no UPDATE … RETURNING
		bump = st.Stmt(`UPDATE lock_seqs SET next = next + 1 WHERE parent = ? RETURNING next`)
	}
	return stmts{
		seqBump:    bump,
		session:    st.Stmt(`SELECT expires_at, principal FROM lock_sessions WHERE id = ?`),
		seqNext:    st.Stmt(`UPDATE lock_seqs SET next = next + 1 WHERE parent = ?`),
		seqGet:     st.Stmt(`SELECT next FROM lock_seqs WHERE parent = ?`),
		seqInsert:  st.Stmt(`INSERT INTO lock_seqs (parent, next) VALUES (?, 1)`),
		insertNode: st.Stmt(`INSERT INTO lock_nodes (path, parent, seq, session_id, data, created_at) VALUES (?, ?, ?, ?, ?, ?)`),
		keyed:      st.Stmt(`SELECT ` + nodeCols + ` FROM lock_nodes WHERE session_id = ? AND parent = ?`),
		anyNode:    st.Stmt(`SELECT 1 FROM lock_nodes WHERE parent = ? LIMIT 1`),
		pred:       st.Stmt(`SELECT path FROM lock_nodes WHERE parent = ? AND seq < ? ORDER BY seq DESC LIMIT 1`),
		get:        st.Stmt(`SELECT ` + nodeCols + ` FROM lock_nodes WHERE path = ?`),
		del:        st.Stmt(`DELETE FROM lock_nodes WHERE path = ?`),
	}
}

// op is one write for the group committer: fn runs in a transaction
// shared with the writes queued beside it (one commit, one fsync for all).
type op struct {
	fn   func(tx *store.Tx) error
	done chan error
}

// New returns an unstarted Server.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, st: cfg.Store, log: cfg.Logger, watchers: map[string]map[chan struct{}]struct{}{}, gen: make(chan struct{}), ops: make(chan *op, 256), q: newStmts(cfg.Store)}
	s.stopCtx, s.stop = context.WithCancel(context.Background())
	return s, nil
}

// Start begins sweeping expired sessions (and listening for other
// servers' deletions on PostgreSQL).
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.started {
		return ErrClosed
	}
	s.started = true
	s.goFunc(s.sweepLoop)
	s.goFunc(s.committer)
	if s.st.CanListen() {
		s.goFunc(func() { _ = s.st.Listen(s.stopCtx, notifyChannel, s.wakeAll, s.log) })
	}
	return nil
}

// goFunc runs f as one of the server's goroutines; s.mu held.
func (s *Server) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Shutdown ends the waits in progress (their clients retry elsewhere)
// and stops; sessions stay in the store for the other servers.
func (s *Server) Shutdown(ctx context.Context) error {
	done := make(chan struct{})
	go func() { _ = s.Close(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	return nil
}

const notifyChannel = "tangram_lock"

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) ttl(ms int64) (time.Duration, error) {
	if ms == 0 {
		return s.cfg.DefaultTTL, nil
	}
	d := time.Duration(ms) * time.Millisecond
	if d < s.cfg.MinTTL || d > s.cfg.MaxTTL {
		return 0, errcode.New(errcode.BadRequest, fmt.Sprintf("lock: session TTL %v outside [%v, %v]", d, s.cfg.MinTTL, s.cfg.MaxTTL))
	}
	return d, nil
}

// Open opens a session for principal.
func (s *Server) Open(ctx context.Context, principal, owner string, ttlMs int64) (lock.Session, error) {
	ttl, err := s.ttl(ttlMs)
	if err != nil {
		return lock.Session{}, err
	}
	if len(owner) > 191 {
		return lock.Session{}, errcode.New(errcode.BadRequest, "lock: session owner over 191 bytes")
	}
	now := store.NowMillis()
	ss := lock.Session{ID: newID(), Owner: owner, Principal: principal, TTLMs: ttl.Milliseconds(), ExpiresAt: now + ttl.Milliseconds(), CreatedAt: now}
	if _, err := s.st.ExecContext(ctx, `INSERT INTO lock_sessions (id, owner, principal, ttl_ms, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		ss.ID, ss.Owner, ss.Principal, ss.TTLMs, ss.ExpiresAt, ss.CreatedAt); err != nil {
		return lock.Session{}, fmt.Errorf("lock/server: open session: %w", err)
	}
	return ss, nil
}

// KeepAlive renews a live session of principal ("" for any) for its TTL
// from now; ErrSessionExpired once it has expired (even if not swept yet).
func (s *Server) KeepAlive(ctx context.Context, principal, id string) (lock.Session, error) {
	now := store.NowMillis()
	res, err := s.st.ExecContext(ctx, `UPDATE lock_sessions SET expires_at = ? + ttl_ms WHERE id = ? AND expires_at >= ? AND (principal = ? OR ? = '')`, now, id, now, principal, principal)
	if err != nil {
		return lock.Session{}, fmt.Errorf("lock/server: keep-alive: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return lock.Session{}, fmt.Errorf("%w: %s", lock.ErrSessionExpired, id)
	}
	var ss lock.Session
	err = s.st.QueryRowContext(ctx, `SELECT id, owner, principal, ttl_ms, expires_at, created_at FROM lock_sessions WHERE id = ?`, id).
		Scan(&ss.ID, &ss.Owner, &ss.Principal, &ss.TTLMs, &ss.ExpiresAt, &ss.CreatedAt)
	if err != nil {
		return lock.Session{}, fmt.Errorf("lock/server: keep-alive: %w", err)
	}
	return ss, nil
}

// CloseSession ends a session of principal ("" for any: an admin) now,
// deleting its ephemeral nodes.
func (s *Server) CloseSession(ctx context.Context, principal, id string) error {
	var gone []string
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM lock_sessions WHERE id = ? AND (principal = ? OR ? = '')`, id, principal, principal)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %s", lock.ErrSessionExpired, id)
		}
		gone, err = deleteSessionNodes(ctx, tx, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("lock/server: close session: %w", err)
	}
	s.wake(gone)
	return nil
}

// deleteSessionNodes deletes a session's ephemeral nodes, returning
// their paths, and tells other servers.
func deleteSessionNodes(ctx context.Context, tx *store.Tx, id string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT path FROM lock_nodes WHERE session_id = ?`, id)
	if err != nil {
		return nil, err
	}
	var paths []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			rows.Close()
			return nil, err
		}
		paths = append(paths, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM lock_nodes WHERE session_id = ?`, id); err != nil {
		return nil, err
	}
	return paths, tx.Notify(ctx, notifyChannel)
}

// sweepLoop ends expired sessions.
func (s *Server) sweepLoop() {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stopCtx.Done():
			return
		case <-t.C:
		}
		if err := s.Sweep(s.stopCtx); err != nil && s.stopCtx.Err() == nil {
			s.log.Warn("lock/server: sweeping expired sessions", "err", err)
		}
	}
}

// Sweep ends the sessions whose expiry has passed, deleting their
// ephemeral nodes and waking their watchers.
func (s *Server) Sweep(ctx context.Context) error {
	now := store.NowMillis()
	rows, err := s.st.QueryContext(ctx, `SELECT id FROM lock_sessions WHERE expires_at < ? ORDER BY expires_at LIMIT 200`, now)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, id := range ids {
		var gone []string
		err := s.st.InTx(ctx, func(tx *store.Tx) error {
			// Only if still expired: a keep-alive may have come in between.
			res, err := tx.ExecContext(ctx, `DELETE FROM lock_sessions WHERE id = ? AND expires_at < ?`, id, store.NowMillis())
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				return nil
			}
			gone, err = deleteSessionNodes(ctx, tx, id)
			return err
		})
		if err != nil {
			return fmt.Errorf("lock/server: end session %s: %w", id, err)
		}
		if len(gone) > 0 {
			s.log.Info("lock/server: session expired; its ephemeral nodes deleted", "session", id, "nodes", len(gone))
		}
		s.wake(gone)
	}
	return nil
}

// liveSession checks, inside tx, that session id exists, has not
// expired and belongs to principal (any, when principal is "").
func (s *Server) liveSession(ctx context.Context, tx *store.Tx, id, principal string) error {
	var exp int64
	var owner string
	err := tx.QueryRow(ctx, s.q.session, id).Scan(&exp, &owner)
	if errors.Is(err, sql.ErrNoRows) || (err == nil && exp < store.NowMillis()) {
		return fmt.Errorf("%w: %s", lock.ErrSessionExpired, id)
	}
	if err == nil && principal != "" && owner != principal {
		return errcode.New(errcode.Forbidden, "lock: session "+id+" belongs to another principal")
	}
	return err
}

// nextSeq draws the parent's next sequence number inside tx.
func (s *Server) nextSeq(ctx context.Context, tx *store.Tx, parent string) (int64, error) {
	if s.q.seqBump != nil { // one statement where UPDATE … RETURNING exists
		var seq int64
		err := tx.QueryRow(ctx, s.q.seqBump, parent).Scan(&seq)
		if !errors.Is(err, sql.ErrNoRows) {
			return seq, err
		}
		if _, err := tx.Exec(ctx, s.q.seqInsert, parent); err != nil {
			return 0, err // a concurrent first insert: the caller retries
		}
		return 1, nil
	}
	res, err := tx.Exec(ctx, s.q.seqNext, parent)
	if err != nil {
		return 0, err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := tx.Exec(ctx, s.q.seqInsert, parent); err != nil {
			return 0, err // a concurrent first insert: the caller retries
		}
		return 1, nil
	}
	var seq int64
	err = tx.QueryRow(ctx, s.q.seqGet, parent).Scan(&seq)
	return seq, err
}

// maxBatch bounds the writes committed together.
const maxBatch = 128

// write runs fn in a transaction through the group committer: writes
// that arrive while one commits are committed together, so concurrent
// acquisitions and releases share an fsync (etcd batches its raft log
// the same way). A write that fails is retried alone, so one write's
// error never fails its neighbours.
func (s *Server) write(ctx context.Context, fn func(tx *store.Tx) error) error {
	o := &op{fn: fn, done: make(chan error, 1)}
	select {
	case s.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stopCtx.Done():
		return ErrClosed
	}
	return <-o.done // the committer answers every op it took, also when closing
}

// committer takes queued writes and commits them in batches.
func (s *Server) committer() {
	for {
		var first *op
		select {
		case first = <-s.ops:
		case <-s.stopCtx.Done():
			for {
				select {
				case o := <-s.ops:
					o.done <- ErrClosed
				default:
					return
				}
			}
		}
		batch := []*op{first}
	fill:
		for len(batch) < maxBatch {
			select {
			case o := <-s.ops:
				batch = append(batch, o)
			default:
				break fill
			}
		}
		ctx := context.WithoutCancel(s.stopCtx)
		if len(batch) > 1 {
			err := s.st.InTx(ctx, func(tx *store.Tx) error {
				for _, o := range batch {
					if err := o.fn(tx); err != nil {
						return err
					}
				}
				return nil
			})
			if err == nil {
				for _, o := range batch {
					o.done <- nil
				}
				continue
			}
		}
		for _, o := range batch {
			o.done <- s.inTx(ctx, o.fn)
		}
	}
}

// inTx runs fn in a transaction, once more after a unique violation on a
// parent's first sequence number.
func (s *Server) inTx(ctx context.Context, fn func(tx *store.Tx) error) error {
	err := s.st.InTx(ctx, fn)
	if err != nil && store.IsUniqueViolation(err) && !errors.Is(err, lock.ErrNodeExists) {
		err = s.st.InTx(ctx, fn)
	}
	return err
}

// insertNode creates a node inside tx.
func (s *Server) insertNode(ctx context.Context, tx *store.Tx, principal string, req lock.NodeRequest) (lock.Node, error) {
	if req.Ephemeral {
		if err := s.liveSession(ctx, tx, req.Session, principal); err != nil {
			return lock.Node{}, err
		}
	} else {
		req.Session = ""
	}
	parent := lock.PathParent(req.Path)
	seq, err := s.nextSeq(ctx, tx, parent)
	if err != nil {
		return lock.Node{}, err
	}
	n := lock.Node{Path: req.Path, Parent: parent, Seq: seq, Session: req.Session, Data: req.Data, CreatedAt: store.NowMillis()}
	if req.Sequential {
		n.Path = fmt.Sprintf("%s%010d", req.Path, seq)
	}
	if _, err := tx.Exec(ctx, s.q.insertNode,
		n.Path, n.Parent, n.Seq, n.Session, n.Data, n.CreatedAt); err != nil {
		if store.IsUniqueViolation(err) {
			return lock.Node{}, fmt.Errorf("%w: %s", lock.ErrNodeExists, n.Path)
		}
		return lock.Node{}, err
	}
	return n, nil
}

// Create creates a node (a sequential node's Path is its name's prefix:
// "/app/jobs/job-" becomes "/app/jobs/job-0000000007").
// An ephemeral node needs a live session of principal ("" skips that
// check).
func (s *Server) Create(ctx context.Context, principal string, req lock.NodeRequest) (lock.Node, error) {
	check := req.Path
	if req.Sequential {
		check += "0"
	}
	if err := lock.ValidPath(check); err != nil {
		return lock.Node{}, err
	}
	if len(req.Data) > 64<<10 {
		return lock.Node{}, errcode.New(errcode.TooLarge, "lock: node data over 64 KiB")
	}
	var n lock.Node
	err := s.write(ctx, func(tx *store.Tx) error {
		var err error
		n, err = s.insertNode(ctx, tx, principal, req)
		return err
	})
	if err != nil {
		return lock.Node{}, fmt.Errorf("lock/server: create %s: %w", req.Path, err)
	}
	return n, nil
}

const nodeCols = `path, parent, seq, session_id, data, created_at`

type scanner interface{ Scan(dest ...any) error }

func scanNode(r scanner) (lock.Node, error) {
	var n lock.Node
	err := r.Scan(&n.Path, &n.Parent, &n.Seq, &n.Session, &n.Data, &n.CreatedAt)
	return n, err
}

// Get returns the node at path.
func (s *Server) Get(ctx context.Context, path string) (lock.Node, error) {
	n, err := scanNode(s.q.get.QueryRow(ctx, path))
	if errors.Is(err, sql.ErrNoRows) {
		return lock.Node{}, fmt.Errorf("%w: %s", lock.ErrNoNode, path)
	}
	if err != nil {
		return lock.Node{}, fmt.Errorf("lock/server: get %s: %w", path, err)
	}
	return n, nil
}

func (s *Server) queryNodes(ctx context.Context, q string, args ...any) ([]lock.Node, error) {
	rows, err := s.st.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []lock.Node{}
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// Children lists the children of path in Seq order.
func (s *Server) Children(ctx context.Context, path string) ([]lock.Node, error) {
	ns, err := s.queryNodes(ctx, `SELECT `+nodeCols+` FROM lock_nodes WHERE parent = ? ORDER BY seq`, path)
	if err != nil {
		return nil, fmt.Errorf("lock/server: children of %s: %w", path, err)
	}
	return ns, nil
}

// Delete deletes the node at path (its children stay: paths are names).
func (s *Server) Delete(ctx context.Context, path string) error {
	var gone bool
	err := s.write(ctx, func(tx *store.Tx) error {
		gone = false
		res, err := tx.Exec(ctx, s.q.del, path)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %s", lock.ErrNoNode, path)
		}
		gone = true
		return tx.Notify(ctx, notifyChannel)
	})
	if err != nil {
		return fmt.Errorf("lock/server: delete %s: %w", path, err)
	}
	if gone {
		s.wake([]string{path})
	}
	return nil
}

// Acquire joins the queue of lock name with an ephemeral sequential node
// of the session, in one transaction that also finds whether it is first.
// With try, it joins only when the queue is empty.
// The session must be principal's ("" skips that check).
func (s *Server) Acquire(ctx context.Context, principal string, req lock.AcquireRequest) (lock.AcquireReply, error) {
	parent, err := lock.LockParent(req.Name)
	if err != nil {
		return lock.AcquireReply{}, err
	}
	prefix := parent + "/lock-"
	if req.Key != "" {
		if len(req.Key) > 32 || strings.IndexFunc(req.Key, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') }) >= 0 {
			return lock.AcquireReply{}, errcode.New(errcode.BadRequest, "lock: acquire key: up to 32 letters and digits")
		}
		prefix = parent + "/_c_" + req.Key + "-lock-"
	}
	var rep lock.AcquireReply
	err = s.write(ctx, func(tx *store.Tx) error {
		rep = lock.AcquireReply{}
		if req.Key != "" && req.Repeat { // the node the first try made, if it did
			n, found, err := s.keyedNode(ctx, tx, parent, prefix, req.Session)
			if err != nil {
				return err
			}
			if found {
				pred, err := s.predecessor(ctx, tx, n)
				rep = lock.AcquireReply{Node: n, Held: pred == ""}
				return err
			}
		}
		if req.Try {
			var one int
			err := tx.QueryRow(ctx, s.q.anyNode, parent).Scan(&one)
			if err == nil {
				return s.liveSession(ctx, tx, req.Session, principal) // taken: only the session's validity to report
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		n, err := s.insertNode(ctx, tx, principal, lock.NodeRequest{Session: req.Session, Path: prefix, Data: req.Data, Ephemeral: true, Sequential: true})
		if err != nil {
			return err
		}
		pred, err := s.predecessor(ctx, tx, n)
		if err != nil {
			return err
		}
		rep = lock.AcquireReply{Node: n, Held: pred == ""}
		return nil
	})
	if err != nil {
		return lock.AcquireReply{}, fmt.Errorf("lock/server: acquire %s: %w", req.Name, err)
	}
	return rep, nil
}

// keyedNode finds session's node under parent whose name starts with
// prefix. (Not LIKE: SQLite prepares a LIKE with a bound pattern again on
// every run; a session has few nodes under one parent.)
func (s *Server) keyedNode(ctx context.Context, tx *store.Tx, parent, prefix, session string) (lock.Node, bool, error) {
	rows, err := tx.Query(ctx, s.q.keyed, session, parent)
	if err != nil {
		return lock.Node{}, false, err
	}
	defer rows.Close()
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return lock.Node{}, false, err
		}
		if strings.HasPrefix(n.Path, prefix) {
			return n, true, nil
		}
	}
	return lock.Node{}, false, rows.Err()
}

// predecessor is the path of the node queued just before n ("" if none),
// inside tx (nil: outside a transaction).
func (s *Server) predecessor(ctx context.Context, tx *store.Tx, n lock.Node) (string, error) {
	var p string
	var row *sql.Row
	if tx != nil {
		row = tx.QueryRow(ctx, s.q.pred, n.Parent, n.Seq)
	} else {
		row = s.q.pred.QueryRow(ctx, n.Parent, n.Seq)
	}
	err := row.Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return p, err
}

// AwaitHead waits until the lock node at path is first in its queue
// (true), or the timeout (false), watching only its predecessor;
// ErrNoNode once the node is gone (its session expired).
func (s *Server) AwaitHead(ctx context.Context, path string, timeout time.Duration) (bool, error) {
	return s.await(ctx, timeout, func(ctx context.Context) (string, bool, error) {
		n, err := s.Get(ctx, path)
		if err != nil {
			return "", false, err
		}
		pred, err := s.predecessor(ctx, nil, n)
		if err != nil {
			return "", false, fmt.Errorf("lock/server: await %s: %w", path, err)
		}
		return pred, pred == "", nil
	})
}

// Wait waits until the node at path is deleted (true; at once when there
// is none) or the timeout (false).
func (s *Server) Wait(ctx context.Context, path string, timeout time.Duration) (bool, error) {
	return s.await(ctx, timeout, func(ctx context.Context) (string, bool, error) {
		_, err := s.Get(ctx, path)
		if errors.Is(err, lock.ErrNoNode) {
			return "", true, nil
		}
		return path, false, err
	})
}

// await loops: step names the node whose deletion to wait for, or says
// the wait is over. Step runs again once the watch is registered, so a
// deletion in between is not missed. A wait ends on that node's deletion
// here, a wake from another server, the poll interval, the timeout or
// shutdown.
func (s *Server) await(ctx context.Context, timeout time.Duration, step func(context.Context) (string, bool, error)) (bool, error) {
	if timeout <= 0 || timeout > s.cfg.MaxWait {
		timeout = s.cfg.MaxWait
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		target, done, err := step(ctx)
		if err != nil || done {
			return done, err
		}
		ch, gen := s.watch(target)
		again, done, err := step(ctx)
		if err != nil || done || again != target {
			s.unwatch(target, ch)
			if err != nil || done {
				return done, err
			}
			continue
		}
		poll := time.NewTimer(s.cfg.PollInterval)
		var end error
		timedOut := false
		select {
		case <-ch:
		case <-gen:
		case <-poll.C:
		case <-deadline.C:
			timedOut = true
		case <-ctx.Done():
			end = ctx.Err()
		case <-s.stopCtx.Done():
			end = ErrClosed
		}
		poll.Stop()
		s.unwatch(target, ch)
		if end != nil {
			return false, end
		}
		if timedOut {
			return false, nil
		}
	}
}

// watch registers a waiter for path's deletion; gen is closed by a
// wake-all.
func (s *Server) watch(path string) (chan struct{}, chan struct{}) {
	ch := make(chan struct{})
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.watchers[path]
	if w == nil {
		w = map[chan struct{}]struct{}{}
		s.watchers[path] = w
	}
	w[ch] = struct{}{}
	return ch, s.gen
}

func (s *Server) unwatch(path string, ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.watchers[path]; w != nil {
		delete(w, ch)
		if len(w) == 0 {
			delete(s.watchers, path)
		}
	}
}

// wake wakes the waiters for the deleted paths.
func (s *Server) wake(paths []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range paths {
		for ch := range s.watchers[p] {
			close(ch)
		}
		delete(s.watchers, p)
	}
}

// wakeAll wakes every waiter to re-check (another server deleted nodes).
func (s *Server) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.gen)
	s.gen = make(chan struct{})
}

// Sessions lists the live sessions with their node counts.
func (s *Server) Sessions(ctx context.Context) ([]lock.Session, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT s.id, s.owner, s.principal, s.ttl_ms, s.expires_at, s.created_at,
		(SELECT COUNT(*) FROM lock_nodes n WHERE n.session_id = s.id) FROM lock_sessions s ORDER BY s.created_at LIMIT 10000`)
	if err != nil {
		return nil, fmt.Errorf("lock/server: sessions: %w", err)
	}
	defer rows.Close()
	out := []lock.Session{}
	for rows.Next() {
		var ss lock.Session
		if err := rows.Scan(&ss.ID, &ss.Owner, &ss.Principal, &ss.TTLMs, &ss.ExpiresAt, &ss.CreatedAt, &ss.Nodes); err != nil {
			return nil, fmt.Errorf("lock/server: sessions: %w", err)
		}
		out = append(out, ss)
	}
	return out, rows.Err()
}

// Locks lists the locks (parents of lock nodes): holder and waiters.
func (s *Server) Locks(ctx context.Context) ([]lock.LockInfo, error) {
	ns, err := s.queryNodes(ctx, `SELECT `+nodeCols+` FROM lock_nodes WHERE session_id <> '' AND (path LIKE '%/lock-%' OR path LIKE '%-lock-%') ORDER BY parent, seq LIMIT 100000`)
	if err != nil {
		return nil, fmt.Errorf("lock/server: locks: %w", err)
	}
	out := []lock.LockInfo{}
	for _, n := range ns {
		if len(out) > 0 && out[len(out)-1].Name == n.Parent[1:] {
			out[len(out)-1].Waiters = append(out[len(out)-1].Waiters, n)
			continue
		}
		out = append(out, lock.LockInfo{Name: n.Parent[1:], Holder: n, Waiters: []lock.Node{}})
	}
	return out, nil
}
