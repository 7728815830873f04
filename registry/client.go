package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/internal/backoff"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/rpc/balance"
)

// ClientConfig configures a discovery Client.
type ClientConfig struct {
	// Servers are registry servers' RPC addresses (tangram server --rpc).
	Servers []string
	// Token is an API token with edit permission on the services the client
	// registers and read permission on those it watches.
	Token string
	// CacheDir keeps a disk snapshot of every watched service; a client
	// that starts while no server answers uses it. Empty disables it.
	CacheDir string
	// HeartbeatInterval is how often registered instances are renewed (5 s).
	HeartbeatInterval time.Duration
	// SnapshotWait is how long a new watch waits for a server before it
	// falls back to the disk snapshot (3 s).
	SnapshotWait time.Duration
	// KeepOnClose leaves registered instances in place on Close (they
	// expire by heartbeat instead of being deregistered).
	KeepOnClose bool
	Logger      *slog.Logger
	// DialOptions are added to the RPC client's options (tests: faster
	// heartbeats).
	DialOptions []rpc.DialOption
}

// Client registers instances (and keeps them renewed) and watches services
// for RPC clients (Resolver). It sticks to one registry server while that
// server answers — so its instances keep one owner — and moves to another
// when it does not.
type Client struct {
	cfg ClientConfig
	log *slog.Logger
	rc  *rpc.Client
	id  atomic.Value // string: the hash key that picks this client's server

	mu         sync.Mutex
	registered map[Key]map[string]*Instance

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// NewClient returns a client for the registry servers in cfg.
func NewClient(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("registry: client needs at least one server address")
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 5 * time.Second
	}
	if cfg.SnapshotWait <= 0 {
		cfg.SnapshotWait = 3 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	opts := []rpc.DialOption{
		rpc.WithBalancer(balance.ConsistentHash(1.25)),
		rpc.WithLogger(cfg.Logger),
		rpc.WithTimeout(5 * time.Second),
		rpc.WithIdempotent("tangram.Registry/Register", "tangram.Registry/Heartbeat", "tangram.Registry/Deregister", "tangram.Registry/Get"),
	}
	if cfg.Token != "" {
		opts = append(opts, rpc.WithToken(cfg.Token))
	}
	target := ""
	for i, s := range cfg.Servers {
		if i > 0 {
			target += ","
		}
		target += s
	}
	rc, err := rpc.Dial(ctx, target, append(opts, cfg.DialOptions...)...)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(context.Background())
	c := &Client{cfg: cfg, log: cfg.Logger, rc: rc,
		registered: map[Key]map[string]*Instance{}, ctx: cctx, cancel: cancel}
	c.id.Store(fmt.Sprintf("%x", rand.Uint64()))
	c.goFunc(c.heartbeats)
	return c, nil
}

func (c *Client) goFunc(f func()) {
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		f()
	}()
}

// sticky routes a call to this client's server of choice.
func (c *Client) sticky() rpc.CallOption { return rpc.HashKey(c.id.Load().(string)) }

// moveOn picks another server after a failure that did not take the server
// out of rotation (a frozen or partitioned server still accepts
// connections; its calls just time out).
func (c *Client) moveOn() { c.id.Store(fmt.Sprintf("%x", rand.Uint64())) }

// Register registers an instance and renews it until Deregister or Close.
func (c *Client) Register(ctx context.Context, in Instance) (*Instance, error) {
	if err := in.Normalize(); err != nil {
		return nil, err
	}
	out, err := rpc.Call[Instance](ctx, c.rc, "tangram.Registry/Register", &in, c.sticky())
	if err != nil {
		return nil, fmt.Errorf("registry: register %s of %s: %w", in.ID, in.Key, err)
	}
	if out.Ephemeral {
		c.mu.Lock()
		m := c.registered[out.Key]
		if m == nil {
			m = map[string]*Instance{}
			c.registered[out.Key] = m
		}
		m[out.ID] = in.Clone()
		c.mu.Unlock()
	}
	return out, nil
}

// Deregister removes an instance and stops renewing it.
func (c *Client) Deregister(ctx context.Context, k Key, id string) error {
	k.Fill()
	c.mu.Lock()
	delete(c.registered[k], id)
	c.mu.Unlock()
	_, err := rpc.Call[Empty](ctx, c.rc, "tangram.Registry/Deregister", &InstanceRef{Key: k, ID: id}, c.sticky())
	return err
}

func (c *Client) heartbeats() {
	t := time.NewTicker(c.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		batches := map[Key][]string{}
		for k, m := range c.registered {
			for id := range m {
				batches[k] = append(batches[k], id)
			}
		}
		c.mu.Unlock()
		for k, ids := range batches {
			ctx, cancel := context.WithTimeout(c.ctx, c.cfg.HeartbeatInterval)
			rep, err := rpc.Call[HeartbeatReply](ctx, c.rc, "tangram.Registry/Heartbeat", &HeartbeatRequest{Key: k, IDs: ids}, c.sticky())
			cancel()
			if err != nil {
				if c.ctx.Err() == nil {
					c.log.Warn("registry: heartbeat failed; trying another server next", "service", k.String(), "err", err)
					c.moveOn()
				}
				continue
			}
			for _, id := range rep.Unknown { // server restarted or moved: register again
				c.mu.Lock()
				in := c.registered[k][id]
				c.mu.Unlock()
				if in == nil {
					continue
				}
				rctx, rcancel := context.WithTimeout(c.ctx, c.cfg.HeartbeatInterval)
				if _, err := rpc.Call[Instance](rctx, c.rc, "tangram.Registry/Register", in, c.sticky()); err != nil {
					c.log.Warn("registry: re-registering failed; will retry", "service", k.String(), "id", id, "err", err)
					c.moveOn()
				} else {
					c.log.Info("registry: re-registered an instance the server did not know", "service", k.String(), "id", id)
				}
				rcancel()
			}
		}
	}
}

// Close deregisters the client's instances (unless KeepOnClose), stops
// watches and heartbeats, and closes connections.
func (c *Client) Close() error {
	c.once.Do(func() {
		if !c.cfg.KeepOnClose {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			c.mu.Lock()
			var refs []InstanceRef
			for k, m := range c.registered {
				for id := range m {
					refs = append(refs, InstanceRef{Key: k, ID: id})
				}
			}
			c.mu.Unlock()
			for _, ref := range refs {
				if _, err := rpc.Call[Empty](ctx, c.rc, "tangram.Registry/Deregister", &ref, c.sticky()); err != nil {
					c.log.Warn("registry: deregistering on close failed; the instance will expire", "id", ref.ID, "err", err)
				}
			}
			cancel()
		}
		c.cancel()
		c.wg.Wait()
		c.rc.Close()
	})
	return nil
}

// Get returns a service's instances from a server.
func (c *Client) Get(ctx context.Context, k Key) (*Snapshot, error) {
	k.Fill()
	return rpc.Call[Snapshot](ctx, c.rc, "tangram.Registry/Get", &k, c.sticky())
}

// Watch calls fn with a service's instances now and after every change,
// until ctx ends. It reconnects (to another server if need be) with backoff,
// resuming from its revision on the same server; it uses the disk snapshot
// when no server answers in SnapshotWait; and an empty list never replaces a
// non-empty one unless the server says the service was emptied. A watch the
// servers refuse (Unauthenticated, PermissionDenied) before any list was
// served returns that error at once: a wrong token fails fast, and so does
// an rpc.Dial through Resolver, instead of waiting for a first list.
func (c *Client) Watch(ctx context.Context, k Key, fn func([]*Instance)) error {
	k.Fill()
	if err := k.Validate(); err != nil {
		return err
	}
	w := &watch{c: c, key: k, fn: fn, list: map[string]*Instance{}}
	return w.run(ctx)
}

type watch struct {
	c      *Client
	key    Key
	fn     func([]*Instance)
	list   map[string]*Instance
	rev    int64
	node   string
	live   bool // got a list from a server
	cached bool // serving the disk snapshot
}

func (w *watch) run(ctx context.Context) error {
	// Until a server answers, the disk snapshot stands in after SnapshotWait.
	deadline := time.Now().Add(w.c.cfg.SnapshotWait)
	bo := backoff.New(100*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil && w.c.ctx.Err() == nil {
		err := w.stream(ctx)
		if ctx.Err() != nil || w.c.ctx.Err() != nil {
			break
		}
		if code := rpc.CodeOf(err); code == rpc.Unauthenticated || code == rpc.PermissionDenied {
			if !w.live && !w.cached {
				// Refused before anything was served: no retry will help
				// (a wrong token, a token without read on the service), so
				// say so at once instead of waiting forever.
				return fmt.Errorf("registry: watch %s: %w", w.key, err)
			}
			w.c.log.Warn("registry: watch refused; keeping the last list and retrying", "service", w.key.String(), "err", err)
		}
		if !w.live && !w.cached && time.Now().After(deadline) {
			w.useSnapshot(err)
		}
		w.c.log.Debug("registry: watch stream ended; reconnecting", "service", w.key.String(), "err", err, "backoff", bo.Current())
		w.c.moveOn()
		wait := bo.Next()
		if !w.live && !w.cached {
			wait = min(wait, time.Until(deadline)+time.Millisecond)
		}
		select {
		case <-ctx.Done():
		case <-w.c.ctx.Done():
		case <-time.After(max(wait, time.Millisecond)):
		}
	}
	return nil
}

func (w *watch) stream(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(w.c.ctx, cancel)
	defer stop()
	st, err := rpc.NewStream[WatchRequest, Snapshot](sctx, w.c.rc, "tangram.Registry/Watch", w.c.sticky())
	if err != nil {
		return err
	}
	if err := st.Send(&WatchRequest{Key: w.key, Revision: w.rev, Node: w.node}); err != nil {
		return err
	}
	_ = st.CloseSend()
	first := true
	for {
		var snap *Snapshot
		if first && !w.live && !w.cached {
			// Bound the first answer so the snapshot fallback can happen.
			type res struct {
				s   *Snapshot
				err error
			}
			ch := make(chan res, 1)
			go func() { s, err := st.Recv(); ch <- res{s, err} }()
			select {
			case r := <-ch:
				snap, err = r.s, r.err
			case <-time.After(w.c.cfg.SnapshotWait):
				cancel()
				<-ch // the canceled stream's Recv returns
				return errors.New("no answer from a registry server in time")
			}
		} else {
			snap, err = st.Recv()
		}
		if err != nil {
			return err
		}
		first = false
		w.apply(snap)
	}
}

// apply folds a snapshot or a batch of events into the list and reports it.
func (w *watch) apply(s *Snapshot) {
	w.rev, w.node = s.Revision, s.Node
	if s.Full {
		if len(s.Instances) == 0 && len(w.list) > 0 && !s.Emptied {
			w.c.log.Warn("registry: ignoring an empty list for a service that had instances (the server may have restarted); keeping the last list",
				"service", w.key.String(), "kept", len(w.list), "server", s.Node)
			w.live = true
			return
		}
		w.list = map[string]*Instance{}
		for _, in := range s.Instances {
			w.list[in.ID] = in
		}
	} else {
		for _, ev := range s.Events {
			switch ev.Type {
			case EventPut:
				w.list[ev.Instance.ID] = ev.Instance
			case EventDelete:
				delete(w.list, ev.Instance.ID)
			}
		}
	}
	if w.cached {
		w.c.log.Info("registry: a server answered; the disk snapshot is no longer used", "service", w.key.String())
	}
	w.live, w.cached = true, false
	out := w.sorted()
	w.save(out)
	w.fn(out)
}

func (w *watch) sorted() []*Instance {
	out := make([]*Instance, 0, len(w.list))
	for _, in := range w.list {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (w *watch) snapshotPath() string {
	if w.c.cfg.CacheDir == "" {
		return ""
	}
	return filepath.Join(w.c.cfg.CacheDir, "registry", w.key.Namespace, w.key.Group, w.key.Service+".json")
}

func (w *watch) save(list []*Instance) {
	p := w.snapshotPath()
	if p == "" {
		return
	}
	b, err := json.Marshal(list)
	if err == nil {
		err = os.MkdirAll(filepath.Dir(p), 0o755)
	}
	if err == nil {
		tmp := p + ".tmp"
		if err = os.WriteFile(tmp, b, 0o644); err == nil {
			err = os.Rename(tmp, p)
		}
	}
	if err != nil {
		w.c.log.Warn("registry: writing the disk snapshot failed", "path", p, "err", err)
	}
}

func (w *watch) useSnapshot(cause error) {
	p := w.snapshotPath()
	if p == "" {
		return
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return
	}
	var list []*Instance
	if err := json.Unmarshal(b, &list); err != nil {
		w.c.log.Warn("registry: unreadable disk snapshot ignored", "path", p, "err", err)
		return
	}
	w.cached = true
	for _, in := range list {
		w.list[in.ID] = in
	}
	w.c.log.Warn("registry: no registry server answers; using the disk snapshot", "service", w.key.String(),
		"instances", len(list), "path", p, "cause", cause)
	w.fn(w.sorted())
}

// Resolver returns an rpc.Resolver for the service: the healthy, enabled
// instances with a weight above zero, as addresses with weight and zone.
func (c *Client) Resolver(k Key) rpc.Resolver { return resolver{c: c, key: k} }

type resolver struct {
	c   *Client
	key Key
}

func (r resolver) Watch(ctx context.Context, update func([]rpc.Address)) error {
	return r.c.Watch(ctx, r.key, func(list []*Instance) {
		var out []rpc.Address
		for _, in := range list {
			if in.Healthy && in.Enabled && in.Weight > 0 {
				out = append(out, rpc.Address{Addr: in.Addr(), Weight: int(in.Weight), Zone: in.Zone, Meta: in.Metadata})
			}
		}
		update(out)
	})
}
