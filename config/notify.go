package config

import (
	"context"
	"fmt"
	"sync"
	"time"

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
}

// writeMessages records a release of ns, and of every namespace linked to
// it when ns is public, and drops older messages of the same keys.
func (s *Server) writeMessages(ctx context.Context, tx *store.Tx, ns *Namespace) ([]notice, error) {
	keys := []string{ns.messageKey()}
	if ns.Public {
		rows, err := tx.QueryContext(ctx, `SELECT env, app, cluster, name FROM config_namespaces WHERE env = ? AND name = ? AND link_app = ?`, ns.Env, ns.NS, ns.App)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var c Coord
			if err := rows.Scan(&c.Env, &c.App, &c.Cluster, &c.NS); err != nil {
				rows.Close()
				return nil, err
			}
			keys = append(keys, c.messageKey())
		}
		rows.Close()
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
	s.hub.publish(notes)
	return last, rows.Err()
}

// scanOverlap re-reads this many ids below the highest seen: ids are
// allocated before commit, so a transaction with a lower id can commit
// after a higher one was already scanned.
const scanOverlap = 512

func (s *Server) scanLoop(last int64) {
	t := time.NewTicker(s.cfg.ScanInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
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
	s.hub.publish(notes)
	return last, nil
}

// hub holds the latest notification id per key and the watchers waiting
// on each key.
type hub struct {
	mu      sync.Mutex
	latest  map[string]int64
	waiters map[string]map[*waiter]struct{}
	closed  bool
}

type waiter struct{ ch chan struct{} }

func newHub() *hub {
	return &hub{latest: map[string]int64{}, waiters: map[string]map[*waiter]struct{}{}}
}

func (h *hub) publish(notes []notice) {
	if len(notes) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range notes {
		if n.id <= h.latest[n.key] {
			continue
		}
		h.latest[n.key] = n.id
		for w := range h.waiters[n.key] {
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
}

// current returns the notification id of each key group (max over the
// group's keys).
func (h *hub) current(groups [][]string) []int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]int64, len(groups))
	for i, g := range groups {
		for _, k := range g {
			out[i] = max(out[i], h.latest[k])
		}
	}
	return out
}

func (h *hub) subscribe(groups [][]string) (*waiter, bool) {
	w := &waiter{ch: make(chan struct{}, 1)}
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
	return w, true
}

func (h *hub) unsubscribe(w *waiter, groups [][]string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, g := range groups {
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

func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for _, m := range h.waiters {
		for w := range m {
			select {
			case w.ch <- struct{}{}:
			default:
			}
		}
	}
}

func (h *hub) watching() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	seen := map[*waiter]struct{}{}
	for _, m := range h.waiters {
		for w := range m {
			seen[w] = struct{}{}
		}
	}
	return len(seen)
}

// Notification is a namespace and the notification id a client holds (or,
// in an answer, the current one).
type Notification struct {
	NS string `json:"ns"`
	ID int64  `json:"id"`
}

// WatchRequest is a client's long poll.
type WatchRequest struct {
	Env        string         `json:"env"`
	App        string         `json:"app"`
	Cluster    string         `json:"cluster"`
	Namespaces []Notification `json:"namespaces"`
}

func watchKeys(env, app, cluster, ns string) []string {
	keys := []string{Coord{env, app, cluster, ns}.messageKey()}
	if cluster != DefaultCluster {
		keys = append(keys, Coord{env, app, DefaultCluster, ns}.messageKey())
	}
	return keys
}

// Watch returns the namespaces whose notification id differs from the one
// the client holds, waiting up to hold for one to change. An empty answer
// means nothing changed within hold.
func (s *Server) Watch(ctx context.Context, req WatchRequest, hold time.Duration) ([]Notification, error) {
	if req.Cluster == "" {
		req.Cluster = DefaultCluster
	}
	if len(req.Namespaces) == 0 {
		return nil, fmt.Errorf("%w: watch needs at least one namespace", ErrInvalid)
	}
	if len(req.Namespaces) > 256 {
		return nil, fmt.Errorf("%w: watch at most 256 namespaces per request", ErrInvalid)
	}
	for _, n := range req.Namespaces {
		if err := (Coord{req.Env, req.App, req.Cluster, n.NS}).Validate(); err != nil {
			return nil, err
		}
	}
	if hold <= 0 || hold > s.cfg.MaxHold {
		hold = s.cfg.MaxHold
	}
	groups := make([][]string, len(req.Namespaces))
	for i, n := range req.Namespaces {
		groups[i] = watchKeys(req.Env, req.App, req.Cluster, n.NS)
	}
	changed := func() []Notification {
		cur := s.hub.current(groups)
		var out []Notification
		for i, n := range req.Namespaces {
			if cur[i] != n.ID {
				out = append(out, Notification{NS: n.NS, ID: cur[i]})
			}
		}
		return out
	}
	if out := changed(); len(out) > 0 {
		return out, nil
	}
	w, ok := s.hub.subscribe(groups)
	if !ok {
		return nil, ErrServerClosed
	}
	defer s.hub.unsubscribe(w, groups)
	// A release may have landed between the check and the subscription.
	if out := changed(); len(out) > 0 {
		return out, nil
	}
	timer := time.NewTimer(hold)
	defer timer.Stop()
	select {
	case <-w.ch:
		if s.closed.Load() {
			return nil, ErrServerClosed
		}
		return changed(), nil
	case <-timer.C:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.stop:
		return nil, ErrServerClosed
	}
}

// Watchers returns the number of watches held open on this server.
func (s *Server) Watchers() int { return s.hub.watching() }
