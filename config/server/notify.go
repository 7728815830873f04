package server

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/config"

	"github.com/tangram-dev/tangram/internal/store"
)

// How push works (Apollo's design, kept): every release writes a row to
// config_release_messages in the same transaction as the release; its id is
// the namespace's new notification id. The server that published wakes its
// own watchers at once; every server also scans the table each
// ScanInterval, so a release made on any server sharing the store reaches
// watchers on every server within about a second. Clients send the ids they
// hold, so a client that reconnects (to this or another server) after a
// restart learns of every change it missed: nothing depends on a watch
// being open when the release happened.

type notice struct {
	key string
	id  int64
	// kind is the release kind on the notice of the released namespace
	// itself ("" on scanned and linked notices); counted once committed.
	kind string
}

// writeMessages records a release of ns, and of every namespace linked to
// it when ns is public, and drops older messages of the same keys.
func (s *Server) writeMessages(ctx context.Context, tx *store.Tx, ns *config.Namespace) ([]notice, error) {
	keys := []string{ns.MessageKey()}
	if ns.Public {
		rows, err := tx.QueryContext(ctx, `SELECT env, app, cluster, name FROM config_namespaces WHERE env = ? AND name = ? AND link_app = ?`, ns.Env, ns.NS, ns.App)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var c config.Coord
			if err := rows.Scan(&c.Env, &c.App, &c.Cluster, &c.NS); err != nil {
				rows.Close()
				return nil, err
			}
			keys = append(keys, c.MessageKey())
		}
		rows.Close()
	}
	// Delivered at commit to every server listening: they scan at once
	// instead of at their next tick.
	if err := tx.Notify(ctx, pgChannel); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	out := make([]notice, 0, len(keys))
	for _, k := range keys {
		id, err := tx.InsertID(ctx, `INSERT INTO config_release_messages (message, created_at) VALUES (?, ?)`, k, store.NowMillis())
		if err != nil {
			return nil, fmt.Errorf("config: write release message: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM config_release_messages WHERE message = ? AND id < ?`, k, id); err != nil {
			return nil, fmt.Errorf("config: trim release messages: %w", err)
		}
		out = append(out, notice{key: k, id: id})
	}
	return out, nil
}

func (s *Server) loadNotifications(ctx context.Context) (int64, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT message, MAX(id) FROM config_release_messages GROUP BY message`)
	if err != nil {
		return 0, fmt.Errorf("config: load release messages: %w", err)
	}
	defer rows.Close()
	var notes []notice
	var last int64
	for rows.Next() {
		var n notice
		if err := rows.Scan(&n.key, &n.id); err != nil {
			return 0, err
		}
		notes = append(notes, n)
		last = max(last, n.id)
	}
	s.notify(notes)
	return last, rows.Err()
}

// scanOverlap re-reads this many ids below the highest seen: ids are
// allocated before commit, so a transaction with a lower id can commit
// after a higher one was already scanned.
const scanOverlap = 512

// pgChannel is the store's wake-up channel of config releases.
const pgChannel = "tangram_config_release"

func (s *Server) scanLoop(last int64) {
	t := time.NewTicker(s.cfg.ScanInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		next, err := s.scan(ctx, last)
		cancel()
		if err != nil {
			s.log.Warn("config: scan release messages", "err", err)
			continue
		}
		last = next
	}
}

func (s *Server) scan(ctx context.Context, last int64) (int64, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT id, message FROM config_release_messages WHERE id > ? ORDER BY id`, max(0, last-scanOverlap))
	if err != nil {
		return last, err
	}
	defer rows.Close()
	var notes []notice
	for rows.Next() {
		var n notice
		if err := rows.Scan(&n.id, &n.key); err != nil {
			return last, err
		}
		notes = append(notes, n)
		last = max(last, n.id)
	}
	if err := rows.Err(); err != nil {
		return last, err
	}
	s.notify(notes)
	return last, nil
}

// hub holds the latest notification id per key and the watchers waiting
// on each key. A waiter fires once: publish removes a fired waiter from
// every key it waits on, so the woken watch does not contend for the hub
// lock to unsubscribe. Lock order: hub.mu only; no other lock is taken
// while holding it.
type hub struct {
	mu      sync.RWMutex
	latest  map[string]int64
	waiters map[string]map[*waiter]struct{}
	closed  bool
	count   atomic.Int64
}

type waiter struct {
	ch     chan struct{} // signalled on fire (blocking watches)
	pw     *parkedWatch  // or answered by the fan-out (parked watches)
	groups [][]string
	done   atomic.Bool // fired or unsubscribed: no longer in any map
}

// signal wakes a blocking waiter or collects a parked one into fired.
func (w *waiter) signal(fired []*parkedWatch) []*parkedWatch {
	if w.pw != nil {
		return append(fired, w.pw)
	}
	select {
	case w.ch <- struct{}{}:
	default:
	}
	return fired
}

func newHub() *hub {
	return &hub{latest: map[string]int64{}, waiters: map[string]map[*waiter]struct{}{}}
}

// publish records new notification ids, wakes blocking waiters and returns
// the parked watches to answer.
func (h *hub) publish(notes []notice) []*parkedWatch {
	if len(notes) == 0 {
		return nil
	}
	var fired []*parkedWatch
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range notes {
		if n.id <= h.latest[n.key] {
			continue
		}
		h.latest[n.key] = n.id
		for w := range h.waiters[n.key] {
			h.removeLocked(w)
			fired = w.signal(fired)
		}
	}
	return fired
}

// removeLocked takes w out of every key it waits on. h.mu must be held.
func (h *hub) removeLocked(w *waiter) {
	if w.done.Swap(true) {
		return
	}
	h.count.Add(-1)
	for _, g := range w.groups {
		for _, k := range g {
			if m := h.waiters[k]; m != nil {
				delete(m, w)
				if len(m) == 0 {
					delete(h.waiters, k)
				}
			}
		}
	}
}

// current returns the notification id of each key group (max over the
// group's keys).
func (h *hub) current(groups [][]string) []int64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]int64, len(groups))
	for i, g := range groups {
		for _, k := range g {
			out[i] = max(out[i], h.latest[k])
		}
	}
	return out
}

func (h *hub) subscribe(groups [][]string, pw *parkedWatch) (*waiter, bool) {
	w := &waiter{groups: groups, pw: pw}
	if pw == nil {
		w.ch = make(chan struct{}, 1)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	for _, g := range groups {
		for _, k := range g {
			m := h.waiters[k]
			if m == nil {
				m = map[*waiter]struct{}{}
				h.waiters[k] = m
			}
			m[w] = struct{}{}
		}
	}
	h.count.Add(1)
	return w, true
}

// unsubscribe removes w; it reports false when w had already fired.
func (h *hub) unsubscribe(w *waiter) bool {
	if w.done.Load() {
		return false // fired: publish already removed it
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if w.done.Load() {
		return false
	}
	h.removeLocked(w)
	return true
}

func (h *hub) closeAll() []*parkedWatch {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	var fired []*parkedWatch
	for _, m := range h.waiters {
		for w := range m {
			h.removeLocked(w)
			fired = w.signal(fired)
		}
	}
	return fired
}

func (h *hub) watching() int { return int(h.count.Load()) }

func watchKeys(env, app, cluster, ns string) []string {
	keys := []string{config.Coord{Env: env, App: app, Cluster: cluster, NS: ns}.MessageKey()}
	if cluster != config.DefaultCluster {
		keys = append(keys, config.Coord{Env: env, App: app, Cluster: config.DefaultCluster, NS: ns}.MessageKey())
	}
	return keys
}

// watch is a validated watch request.
type watch struct {
	req    config.WatchRequest
	groups [][]string
	hold   time.Duration
	// peer identifies the client to gray rules; secrets names the watched
	// namespaces whose secrets it may read in clear (content answers).
	peer    config.Peer
	secrets map[string]bool
}

func (s *Server) newWatch(req config.WatchRequest, hold time.Duration) (*watch, error) {
	if req.Cluster == "" {
		req.Cluster = config.DefaultCluster
	}
	if len(req.Namespaces) == 0 {
		return nil, fmt.Errorf("%w: watch needs at least one namespace", config.ErrInvalid)
	}
	if len(req.Namespaces) > 256 {
		return nil, fmt.Errorf("%w: watch at most 256 namespaces per request", config.ErrInvalid)
	}
	for _, n := range req.Namespaces {
		if err := (config.Coord{Env: req.Env, App: req.App, Cluster: req.Cluster, NS: n.NS}).Validate(); err != nil {
			return nil, err
		}
	}
	if len(req.IP) > 64 || len(req.Instance) > 128 || len(req.Labels) > 64 {
		return nil, fmt.Errorf("%w: watch ip (64 bytes), instance (128 bytes) or labels (64) longer than its limit", config.ErrInvalid)
	}
	n := 0
	for _, l := range req.Labels {
		n += len(l) + 1
	}
	if n > 1024 {
		return nil, fmt.Errorf("%w: watch labels longer than 1024 bytes", config.ErrInvalid)
	}
	if hold <= 0 || hold > s.cfg.MaxHold {
		hold = s.cfg.MaxHold
	}
	w := &watch{req: req, hold: hold, groups: make([][]string, len(req.Namespaces)),
		peer: config.Peer{Instance: req.Instance, IP: req.IP, Labels: req.Labels}}
	for i, n := range req.Namespaces {
		w.groups[i] = watchKeys(req.Env, req.App, req.Cluster, n.NS)
	}
	return w, nil
}

// watchTargetsExist answers 404 for a watched namespace that does not
// exist, so a typo is not mistaken for an empty config. Only namespaces
// with no release message yet (id 0) are looked up: any other id proves
// the namespace exists, and watches stay off the store.
func (s *Server) watchTargetsExist(ctx context.Context, w *watch) error {
	cur := s.hub.current(w.groups)
	for i, n := range w.req.Namespaces {
		if cur[i] != 0 {
			continue
		}
		c := config.Coord{Env: w.req.Env, App: w.req.App, Cluster: w.req.Cluster, NS: n.NS}
		if _, err := s.resolve(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// changed lists the namespaces whose id differs from the client's.
func (s *Server) changed(w *watch) []config.Notification {
	cur := s.hub.current(w.groups)
	var out []config.Notification
	for i, n := range w.req.Namespaces {
		if cur[i] != n.ID {
			out = append(out, config.Notification{NS: n.NS, ID: cur[i]})
		}
	}
	return out
}

// Watch returns the namespaces whose notification id differs from the one
// the client holds, waiting up to hold for one to change. An empty answer
// means nothing changed within hold. It holds the calling goroutine; the
// HTTP handler parks the connection instead when it can (see parkWatch).
func (s *Server) Watch(ctx context.Context, req config.WatchRequest, hold time.Duration) ([]config.Notification, error) {
	w, err := s.newWatch(req, hold)
	if err != nil {
		return nil, err
	}
	if out := s.changed(w); len(out) > 0 {
		return out, nil
	}
	wt, ok := s.hub.subscribe(w.groups, nil)
	if !ok {
		return nil, ErrServerClosed
	}
	defer s.hub.unsubscribe(wt)
	// A release may have landed between the check and the subscription.
	if out := s.changed(w); len(out) > 0 {
		return out, nil
	}
	timer := time.NewTimer(w.hold)
	defer timer.Stop()
	answered := s.metrics.answers.WithLabelValues
	select {
	case <-wt.ch:
		if s.closed.Load() {
			answered("shutdown").Inc()
			return nil, ErrServerClosed
		}
		answered("change").Inc()
		return s.changed(w), nil
	case <-timer.C:
		answered("timeout").Inc()
		return nil, nil
	case <-ctx.Done():
		answered("hangup").Inc()
		return nil, ctx.Err()
	case <-s.stop:
		answered("shutdown").Inc()
		return nil, ErrServerClosed
	}
}

// Watchers returns the number of watches held open on this server.
func (s *Server) Watchers() int { return s.hub.watching() }

// listenLoop has the store wake the scanner when a release is made on any
// server, so cross-server push takes milliseconds; the periodic scan stays
// as the fallback while the connection is down.
func (s *Server) listenLoop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	if err := s.st.Listen(ctx, pgChannel, s.kickScan, s.log); err != nil {
		s.log.Error("config: cannot listen for releases; scanning every interval", "err", err)
	}
}

func (s *Server) kickScan() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
