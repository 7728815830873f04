package lock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/rpc"
)

// Config configures a Client of the server backend.
type Config struct {
	// Servers are tangram servers' RPC addresses (host:7071); several
	// servers on one store share the locks.
	Servers []string
	// Token is an API token with edit permission on the apps whose locks
	// and nodes the client uses (a lock name's first segment is its app).
	Token string
	// Owner labels the session in lists (default: none).
	Owner string
	// SessionTTL: the session, and every lock and ephemeral node it
	// holds, ends this long after the client stops keeping it alive
	// (default 10 s; keep-alives go every third of it).
	SessionTTL time.Duration
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// DialOptions are added to the RPC client's.
	DialOptions []rpc.DialOption
	// RPC, when set, is a connection to share: many sessions (one Client
	// each) then ride one connection, as etcd's sessions share one
	// clientv3, and their calls are written together. Servers, Token and
	// DialOptions are not used, and Close leaves the connection open.
	RPC *rpc.Client
}

// Client is a session with the server backend: ZooKeeper-style locks and
// nodes that live while the session is kept alive. When the session is
// lost (not renewed within its TTL) every lease it held ends with
// ErrLockLost and the client opens a new session for what comes next.
type Client struct {
	cfg    Config
	rpc    *rpc.Client
	ownRPC bool // dialled by Dial, closed by Close
	log    *slog.Logger

	mu      sync.Mutex
	session string
	renewed time.Time // when the last successful keep-alive (or the open) was sent
	leases  map[*Lease]struct{}
	closed  bool

	kick    chan struct{}
	stopCtx context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// Dial connects and opens a session.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Servers) == 0 && cfg.RPC == nil {
		return nil, errors.New("lock: Config.Servers is empty")
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cl, owned := cfg.RPC, false
	if cl == nil {
		opts := append([]rpc.DialOption{rpc.WithLogger(cfg.Logger)}, cfg.DialOptions...)
		if cfg.Token != "" {
			opts = append(opts, rpc.WithToken(cfg.Token))
		}
		var err error
		if cl, err = rpc.Dial(ctx, strings.Join(cfg.Servers, ","), opts...); err != nil {
			return nil, fmt.Errorf("lock: dial: %w", err)
		}
		owned = true
	}
	c := &Client{cfg: cfg, rpc: cl, ownRPC: owned, log: cfg.Logger, leases: map[*Lease]struct{}{}, kick: make(chan struct{}, 1)}
	c.stopCtx, c.stop = context.WithCancel(context.Background())
	if err := c.open(ctx); err != nil {
		if owned {
			_ = cl.Close()
		}
		return nil, err
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.keepAlive()
	}()
	return c, nil
}

func (c *Client) open(ctx context.Context) error {
	sent := time.Now()
	ss, err := rpc.Call[Session](ctx, c.rpc, MethodOpen, &SessionRequest{Owner: c.cfg.Owner, TTLMs: c.cfg.SessionTTL.Milliseconds()})
	if err != nil {
		return fmt.Errorf("lock: open session: %w", err)
	}
	c.mu.Lock()
	c.session, c.renewed = ss.ID, sent
	c.mu.Unlock()
	return nil
}

// Session is the current session's ID ("" while none is open).
func (c *Client) Session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

func drift(ttl time.Duration) time.Duration { return ttl/100 + 2*time.Millisecond }

// keepAlive renews the session every third of its TTL; past the TTL
// without a renewal (less the drift) the session is lost here — before
// the server can end it — and a new one is opened.
func (c *Client) keepAlive() {
	ttl := c.cfg.SessionTTL
	t := time.NewTimer(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-c.stopCtx.Done():
			return
		case <-t.C:
		case <-c.kick:
		}
		c.mu.Lock()
		sid, deadline := c.session, c.renewed.Add(ttl-drift(ttl))
		c.mu.Unlock()
		if sid == "" {
			ctx, cancel := context.WithTimeout(c.stopCtx, ttl/3)
			if err := c.open(ctx); err != nil && c.stopCtx.Err() == nil {
				c.log.Warn("lock: opening a new session failed; retrying", "err", err)
			}
			cancel()
			t.Reset(ttl / 10)
			continue
		}
		if !time.Now().Before(deadline) {
			c.lose(sid, "not renewed within its TTL (the process was paused or the servers unreachable)")
			t.Reset(0)
			continue
		}
		ctx, cancel := context.WithDeadline(c.stopCtx, deadline)
		sent := time.Now()
		_, err := rpc.Call[Session](ctx, c.rpc, MethodKeepAlive, &SessionRequest{ID: sid})
		cancel()
		switch {
		case err == nil:
			c.mu.Lock()
			if c.session == sid && sent.After(c.renewed) {
				c.renewed = sent
			}
			c.mu.Unlock()
			t.Reset(ttl / 3)
		case errors.Is(err, ErrSessionExpired):
			c.lose(sid, "expired on the server")
			t.Reset(0)
		default:
			if c.stopCtx.Err() != nil {
				return
			}
			c.log.Warn("lock: session keep-alive failed; retrying", "session", sid, "err", err)
			t.Reset(min(ttl/12, time.Until(deadline)))
		}
	}
}

// lose ends every lease of session sid and forgets the session (closing
// it on the servers, best effort, so its nodes go at once).
func (c *Client) lose(sid, why string) {
	c.mu.Lock()
	if c.session != sid {
		c.mu.Unlock()
		return
	}
	c.session = ""
	leases := c.leases
	c.leases = map[*Lease]struct{}{}
	c.mu.Unlock()
	err := fmt.Errorf("%w: session %s %s", ErrLockLost, sid, why)
	for l := range leases {
		l.End(err)
	}
	c.log.Warn("lock: session lost", "session", sid, "why", why, "leases", len(leases))
	ctx, cancel := context.WithTimeout(c.stopCtx, time.Second)
	_, _ = rpc.Call[Empty](ctx, c.rpc, MethodClose, &SessionRequest{ID: sid})
	cancel()
}

// track ties a lease to session sid; false when that session is already
// gone.
func (c *Client) track(sid string, l *Lease) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.session != sid || c.closed {
		return false
	}
	c.leases[l] = struct{}{}
	return true
}

func (c *Client) untrack(l *Lease) {
	c.mu.Lock()
	delete(c.leases, l)
	c.mu.Unlock()
}

// liveSession is the session to act in, or an error when none is open.
func (c *Client) liveSession() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return "", errors.New("lock: client closed")
	}
	if c.session == "" {
		c.wakeKeeper()
		return "", fmt.Errorf("%w: a new one is being opened", ErrSessionExpired)
	}
	return c.session, nil
}

func (c *Client) wakeKeeper() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Close ends the session (its locks and ephemeral nodes are deleted at
// once) and the connection, unless it was Config.RPC's.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	sid := c.session
	leases := c.leases
	c.leases = nil
	c.mu.Unlock()
	c.stop()
	c.wg.Wait()
	var err error
	if sid != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = rpc.Call[Empty](ctx, c.rpc, MethodClose, &SessionRequest{ID: sid})
		cancel()
	}
	for l := range leases {
		l.End(nil)
	}
	if c.ownRPC {
		err = errors.Join(err, c.rpc.Close())
	}
	return err
}

// Node flags for Create.
const (
	Persistent = 0
	Ephemeral  = 1 << iota
	Sequential
)

// Create creates a node: Ephemeral ones live while the session does;
// Sequential ones get the parent's next counter value appended to path
// (ZooKeeper's sequential nodes: "/app/q/item-" → "/app/q/item-0000000042").
// The counter only grows, across every server of a cluster.
func (c *Client) Create(ctx context.Context, path, data string, flags int) (Node, error) {
	req := &NodeRequest{Path: path, Data: data, Ephemeral: flags&Ephemeral != 0, Sequential: flags&Sequential != 0}
	if req.Ephemeral {
		sid, err := c.liveSession()
		if err != nil {
			return Node{}, err
		}
		req.Session = sid
	}
	n, err := rpc.Call[Node](ctx, c.rpc, MethodCreate, req)
	if err != nil {
		return Node{}, fmt.Errorf("lock: create %s: %w", path, err)
	}
	return *n, nil
}

// Delete deletes the node at path.
func (c *Client) Delete(ctx context.Context, path string) error {
	if _, err := rpc.Call[Empty](ctx, c.rpc, MethodDelete, &NodeRequest{Path: path}); err != nil {
		return fmt.Errorf("lock: delete %s: %w", path, err)
	}
	return nil
}

// Get returns the node at path (ErrNoNode when there is none).
func (c *Client) Get(ctx context.Context, path string) (Node, error) {
	n, err := rpc.Call[Node](ctx, c.rpc, MethodGet, &NodeRequest{Path: path}, rpc.Idempotent())
	if err != nil {
		return Node{}, fmt.Errorf("lock: get %s: %w", path, err)
	}
	return *n, nil
}

// Children lists path's children in sequence order.
func (c *Client) Children(ctx context.Context, path string) ([]Node, error) {
	r, err := rpc.Call[NodesReply](ctx, c.rpc, MethodChildren, &NodeRequest{Path: path}, rpc.Idempotent())
	if err != nil {
		return nil, fmt.Errorf("lock: children of %s: %w", path, err)
	}
	return r.Nodes, nil
}

// longPoll is the longest one wait RPC asks for.
const longPoll = 25 * time.Second

func pollFor(ctx context.Context) time.Duration {
	d := longPoll
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl))
	}
	return max(d, time.Millisecond)
}

// WaitDeleted waits until the node at path is gone (a watch on it).
func (c *Client) WaitDeleted(ctx context.Context, path string) error {
	for {
		r, err := rpc.Call[WaitReply](ctx, c.rpc, MethodWait, &WaitRequest{Path: path, TimeoutMs: pollFor(ctx).Milliseconds()}, rpc.Idempotent())
		if err != nil {
			return fmt.Errorf("lock: wait for %s: %w", path, err)
		}
		if r.Done {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("lock: wait for %s: %w", path, err)
		}
	}
}

// Mutex returns a handle on the lock name ("app/..."): the recipe of
// ZooKeeper's InterProcessMutex — an ephemeral sequential node per
// acquisition, held when first, each waiter watching its predecessor
// only; the node's sequence number is the fencing token. Reentrant per
// handle.
func (c *Client) Mutex(name string) Locker { return &serverMutex{c: c, name: name} }

type serverMutex struct {
	c    *Client
	name string

	mu    sync.Mutex
	holds int
	node  string
	lease *Lease
}

func (m *serverMutex) reentered() *Lease {
	if m.lease != nil && m.lease.Err() == nil {
		select {
		case <-m.lease.Done():
		default:
			m.holds++
			return m.lease
		}
	}
	m.lease, m.node, m.holds = nil, "", 0
	return nil
}

func (m *serverMutex) acquire(ctx context.Context, try bool) (*Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l := m.reentered(); l != nil {
		return l, nil
	}
	sid, err := m.c.liveSession()
	if err != nil {
		return nil, err
	}
	req := &AcquireRequest{Session: sid, Name: m.name, Data: m.c.cfg.Owner, Try: try, Key: randomKey()}
	rep, err := m.c.acquireRPC(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("lock: acquire %s: %w", m.name, err)
	}
	if try && rep.Node.Path == "" {
		return nil, fmt.Errorf("%w: %s", ErrNotAcquired, m.name)
	}
	for held := rep.Held; !held; {
		r, err := rpc.Call[WaitReply](ctx, m.c.rpc, MethodAwaitHead, &WaitRequest{Path: rep.Node.Path, TimeoutMs: pollFor(ctx).Milliseconds()}, rpc.Idempotent())
		if err == nil && !r.Done {
			err = ctx.Err()
		}
		if err != nil {
			// Leave the queue (best effort: else it goes with the session).
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = m.c.Delete(dctx, rep.Node.Path)
			cancel()
			return nil, fmt.Errorf("lock: wait for %s: %w", m.name, err)
		}
		held = r.Done
	}
	l := NewLease(uint64(rep.Node.Seq))
	if !m.c.track(sid, l) {
		return nil, fmt.Errorf("%w: %s: the session ended while acquiring", ErrLockLost, m.name)
	}
	m.node, m.lease, m.holds = rep.Node.Path, l, 1
	return l, nil
}

// acquireRPC sends an acquisition, repeating it (it is keyed, so safe to
// repeat) while the outcome is unknown — a connection lost, a call cut
// off. When it gives up, it deletes whatever node a lost reply made, so
// no orphan stays queued in a live session.
func (c *Client) acquireRPC(ctx context.Context, req *AcquireRequest) (*AcquireReply, error) {
	var err error
	for i := range 3 {
		req.Repeat = i > 0 && req.Key != ""
		var rep *AcquireReply
		rep, err = rpc.Call[AcquireReply](ctx, c.rpc, MethodAcquire, req)
		if err == nil {
			return rep, nil
		}
		if !unknownOutcome(err) || ctx.Err() != nil {
			break
		}
	}
	if unknownOutcome(err) {
		parent, perr := LockParent(req.Name)
		if perr == nil {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if kids, kerr := c.Children(cctx, parent); kerr == nil {
				for _, n := range kids {
					if strings.Contains(n.Path, "/_c_"+req.Key+"-lock-") {
						_ = c.Delete(cctx, n.Path)
					}
				}
			}
			cancel()
		}
	}
	return nil, err
}

// unknownOutcome reports whether a call may or may not have been done:
// the transport failed rather than the server answering.
func unknownOutcome(err error) bool {
	var re *rpc.Error
	if !errors.As(err, &re) {
		return true
	}
	switch re.Code {
	case rpc.Canceled, rpc.DeadlineExceeded, rpc.Unavailable, rpc.Unknown:
		return true
	}
	return false
}

func randomKey() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (m *serverMutex) Lock(ctx context.Context) (*Lease, error)    { return m.acquire(ctx, false) }
func (m *serverMutex) TryLock(ctx context.Context) (*Lease, error) { return m.acquire(ctx, true) }

func (m *serverMutex) Unlock(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lease == nil {
		return fmt.Errorf("%w: %s", ErrNotHeld, m.name)
	}
	if err := m.lease.Err(); err != nil {
		m.lease, m.node, m.holds = nil, "", 0
		return err
	}
	if m.holds > 1 {
		m.holds--
		return nil
	}
	l, node := m.lease, m.node
	m.lease, m.node, m.holds = nil, "", 0
	m.c.untrack(l)
	err := m.c.Delete(ctx, node)
	if errors.Is(err, ErrNoNode) {
		lost := fmt.Errorf("%w: %s: its node was gone at release (the session had ended)", ErrLockLost, m.name)
		l.End(lost)
		return lost
	}
	l.End(nil)
	return err
}

// Extend renews the session now (the keep-alive does so on its own).
func (m *serverMutex) Extend(ctx context.Context) error {
	m.mu.Lock()
	l := m.lease
	m.mu.Unlock()
	if l == nil {
		return fmt.Errorf("%w: %s", ErrNotHeld, m.name)
	}
	if err := l.Err(); err != nil {
		return err
	}
	sid, err := m.c.liveSession()
	if err != nil {
		return err
	}
	sent := time.Now()
	if _, err := rpc.Call[Session](ctx, m.c.rpc, MethodKeepAlive, &SessionRequest{ID: sid}); err != nil {
		if errors.Is(err, ErrSessionExpired) {
			m.c.lose(sid, "expired on the server")
			return l.Err()
		}
		return fmt.Errorf("lock: extend %s: %w", m.name, err)
	}
	m.c.mu.Lock()
	if m.c.session == sid && sent.After(m.c.renewed) {
		m.c.renewed = sent
	}
	m.c.mu.Unlock()
	return nil
}
