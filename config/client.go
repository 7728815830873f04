package config

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/backoff"
)

// ClientConfig configures a config Client.
type ClientConfig struct {
	// Servers are base URLs of config servers (http://host:7070); the client
	// fails over between them. Required.
	Servers []string
	// Token is an API token with read permission.
	Token string
	// Env, App and Cluster select the configuration. Cluster defaults to "default".
	Env, App, Cluster string
	// Namespaces to load; default ["application"].
	Namespaces []string
	// CacheDir keeps the last good release of each namespace on disk, used
	// when no server answers at start. Default: <user cache dir>/tangram/config.
	// Files hold plaintext values (secrets included) with mode 0600.
	CacheDir string
	// Instance identifies this client (for gray percentages and the
	// console's client list). Default: hostname-pid-random.
	Instance string
	// IP reported for gray rules; default: what the server sees.
	IP string
	// Labels for gray rules.
	Labels []string
	// WatchTimeout is how long the server may hold a watch. Default 60s.
	WatchTimeout time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
	// HTTPClient; default a client with no overall timeout (watches are long).
	HTTPClient *http.Client
}

// ValueChange is one value change seen by a client.
type ValueChange struct {
	Key string
	Old string
	New string
	// Op is "added", "modified" or "deleted".
	Op string
}

// ChangeEvent is delivered to OnChange callbacks after a namespace changes.
type ChangeEvent struct {
	NS      string
	Changes []ValueChange
}

type nsState struct {
	cfg       *Payload
	notifyID  int64
	fromCache bool
}

// Client loads configuration from the config center, keeps it current by
// long polling, and falls back to a disk copy when no server answers.
// It is safe for concurrent use.
type Client struct {
	opts ClientConfig
	log  *slog.Logger
	api  []*apiclient.Client
	cur  atomic.Int32

	mu        sync.RWMutex
	state     map[string]*nsState
	listeners []func(ChangeEvent)

	stop   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
}

// ErrNoConfig is returned by NewClient when no server answers and no disk
// copy exists.
var ErrNoConfig = errors.New("config: no server reachable and no local copy")

// NewClient loads every namespace (from a server, or from the disk copy if
// none answers) and starts watching for changes.
func NewClient(ctx context.Context, opts ClientConfig) (*Client, error) {
	if len(opts.Servers) == 0 {
		return nil, errors.New("config: ClientConfig.Servers is empty")
	}
	if opts.Cluster == "" {
		opts.Cluster = DefaultCluster
	}
	if len(opts.Namespaces) == 0 {
		opts.Namespaces = []string{DefaultNamespace}
	}
	for _, ns := range opts.Namespaces {
		if err := (Coord{opts.Env, opts.App, opts.Cluster, ns}).Validate(); err != nil {
			return nil, err
		}
	}
	if opts.CacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			d = os.TempDir()
		}
		opts.CacheDir = filepath.Join(d, "tangram", "config")
	}
	if opts.Instance == "" {
		host, _ := os.Hostname()
		b := make([]byte, 3)
		_, _ = rand.Read(b)
		opts.Instance = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
	}
	if opts.WatchTimeout <= 0 {
		opts.WatchTimeout = 60 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Transport: http.DefaultTransport}
	}
	c := &Client{opts: opts, log: opts.Logger, state: map[string]*nsState{}, stop: make(chan struct{})}
	for _, s := range opts.Servers {
		ac := apiclient.New(s, opts.Token)
		ac.HTTP = opts.HTTPClient
		c.api = append(c.api, ac)
	}
	if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("config: cache dir: %w", err)
	}
	for _, ns := range opts.Namespaces {
		cfg, err := c.fetchAny(ctx, ns, "")
		if err == nil {
			c.state[ns] = &nsState{cfg: cfg, notifyID: cfg.NotificationID}
			c.writeCache(cfg)
			continue
		}
		if apiclient.IsStatus(err, http.StatusNotFound) || apiclient.IsStatus(err, http.StatusUnauthorized) || apiclient.IsStatus(err, http.StatusForbidden) {
			return nil, fmt.Errorf("config: load %s: %w", ns, err)
		}
		cached, cerr := c.readCache(ns)
		if cerr != nil {
			return nil, fmt.Errorf("%w: %s: server: %v; disk: %v", ErrNoConfig, ns, err, cerr)
		}
		c.log.Warn("config: no server answered; running from the local disk copy", "ns", ns, "release_key", cached.ReleaseKey, "err", err)
		c.state[ns] = &nsState{cfg: cached, notifyID: -1, fromCache: true}
	}
	wctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.watchLoop(wctx)
	}()
	return c, nil
}

// Close stops watching.
func (c *Client) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(c.stop)
	c.cancel()
	c.wg.Wait()
	return nil
}

func (c *Client) path(ns string) string {
	return "/api/v1/config/configs/" + url.PathEscape(c.opts.Env) + "/" + url.PathEscape(c.opts.App) + "/" + url.PathEscape(c.opts.Cluster) + "/" + url.PathEscape(ns)
}

// fetchAny fetches ns from the current server, failing over to the others.
// It returns (nil, nil) on 304 Not Modified.
func (c *Client) fetchAny(ctx context.Context, ns, releaseKey string) (*Payload, error) {
	q := url.Values{}
	q.Set("instance", c.opts.Instance)
	if c.opts.IP != "" {
		q.Set("ip", c.opts.IP)
	}
	if len(c.opts.Labels) > 0 {
		q.Set("labels", strings.Join(c.opts.Labels, ","))
	}
	if releaseKey != "" {
		q.Set("release_key", releaseKey)
	}
	var lastErr error
	for i := 0; i < len(c.api); i++ {
		idx := (int(c.cur.Load()) + i) % len(c.api)
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := c.api[idx].Raw(fctx, http.MethodGet, c.path(ns)+"?"+q.Encode(), nil)
		if err != nil {
			cancel()
			lastErr = err
			if isClientError(err) {
				return nil, err
			}
			continue
		}
		c.cur.Store(int32(idx))
		if resp.StatusCode == http.StatusNotModified {
			resp.Body.Close()
			cancel()
			return nil, nil
		}
		var cfg Payload
		err = json.NewDecoder(resp.Body).Decode(&cfg)
		resp.Body.Close()
		cancel()
		if err != nil {
			lastErr = fmt.Errorf("config: decode %s: %w", ns, err)
			continue
		}
		return &cfg, nil
	}
	return nil, lastErr
}

func isClientError(err error) bool {
	for _, s := range []int{400, 401, 403, 404} {
		if apiclient.IsStatus(err, s) {
			return true
		}
	}
	return false
}

func (c *Client) cacheFile(ns string) string {
	return filepath.Join(c.opts.CacheDir, c.opts.Env+"+"+c.opts.App+"+"+c.opts.Cluster+"+"+ns+".json")
}

func (c *Client) writeCache(cfg *Payload) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return
	}
	f := c.cacheFile(cfg.NS)
	tmp := f + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		c.log.Warn("config: write disk copy", "err", err)
		return
	}
	if err := os.Rename(tmp, f); err != nil {
		c.log.Warn("config: write disk copy", "err", err)
	}
}

func (c *Client) readCache(ns string) (*Payload, error) {
	b, err := os.ReadFile(c.cacheFile(ns))
	if err != nil {
		return nil, err
	}
	var cfg Payload
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("corrupt disk copy %s: %w", c.cacheFile(ns), err)
	}
	return &cfg, nil
}

func (c *Client) watchLoop(ctx context.Context) {
	bo := backoff.New(500*time.Millisecond, 30*time.Second)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		changed, err := c.watchOnce(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Fail over to the next server and back off.
			c.cur.Store(int32((int(c.cur.Load()) + 1) % len(c.api)))
			c.log.Debug("config: watch failed; retrying", "err", err, "next", c.api[c.cur.Load()].Base, "backoff", bo.Current())
			if !bo.Sleep(c.stop) {
				return
			}
			continue
		}
		failed := false
		for _, n := range changed {
			if err := c.refresh(ctx, n); err != nil {
				c.log.Warn("config: refresh after change", "ns", n.NS, "err", err)
				failed = true
			}
		}
		if !failed {
			bo.Reset()
			continue
		}
		// The namespace's id stays old, so the next watch answers at once:
		// back off instead of asking in a tight loop (e.g. read permission
		// revoked, or the server failing).
		if !bo.Sleep(c.stop) {
			return
		}
	}
}

func (c *Client) watchOnce(ctx context.Context) ([]Notification, error) {
	// Content: the answer carries each changed namespace's configuration as
	// a fetch would return it (gray rules matched on IP and labels), so a
	// change costs one round trip.
	req := WatchRequest{Env: c.opts.Env, App: c.opts.App, Cluster: c.opts.Cluster, Instance: c.opts.Instance,
		Content: true, IP: c.opts.IP, Labels: c.opts.Labels}
	c.mu.RLock()
	for _, ns := range c.opts.Namespaces {
		req.Namespaces = append(req.Namespaces, Notification{NS: ns, ID: c.state[ns].notifyID})
	}
	c.mu.RUnlock()
	// A watch the server does not answer within its hold plus a margin is
	// on a dead or partitioned connection: give up and fail over.
	wctx, cancel := context.WithTimeout(ctx, c.opts.WatchTimeout+max(c.opts.WatchTimeout/2, 5*time.Second))
	defer cancel()
	var out struct {
		Changes []Notification `json:"changes"`
	}
	idx := int(c.cur.Load()) % len(c.api)
	err := c.api[idx].Do(wctx, http.MethodPost, "/api/v1/config/watch?timeout="+c.opts.WatchTimeout.String(), req, &out)
	return out.Changes, err
}

// refresh applies a change: the configuration the watch answer carries,
// or (from a server that did not send it) a fetch. It updates the state and
// disk copy, and tells listeners what changed.
func (c *Client) refresh(ctx context.Context, n Notification) error {
	c.mu.RLock()
	st := c.state[n.NS]
	key := ""
	if st != nil {
		key = st.cfg.ReleaseKey // 304 when what we hold (even a disk copy) is current
	}
	c.mu.RUnlock()
	cfg := n.Config
	if cfg != nil && (cfg.NS != n.NS || cfg.Items == nil) {
		c.log.Warn("config: watch answer carries another namespace's configuration or none; fetching", "ns", n.NS, "carried", cfg.NS)
		cfg = nil
	}
	switch {
	case cfg != nil && cfg.ReleaseKey == key:
		cfg = nil // what we hold is current
	case cfg == nil:
		var err error
		if cfg, err = c.fetchAny(ctx, n.NS, key); err != nil {
			return err
		}
	}
	c.mu.Lock()
	st = c.state[n.NS]
	var old map[string]string
	if st != nil && st.cfg != nil {
		old = st.cfg.Items
	}
	if cfg == nil { // not modified
		st.notifyID = n.ID
		if st.fromCache {
			st.fromCache = false
			c.log.Info("config: server reachable again; disk copy is current", "ns", n.NS)
		}
		c.mu.Unlock()
		return nil
	}
	// The fetch read its notification id before the release, so the larger
	// of the two never claims a release newer than the content held.
	c.state[n.NS] = &nsState{cfg: cfg, notifyID: max(n.ID, cfg.NotificationID)}
	listeners := append([]func(ChangeEvent){}, c.listeners...)
	c.mu.Unlock()
	c.writeCache(cfg)
	changes := diffMaps(old, cfg.Items)
	if len(changes) > 0 {
		ev := ChangeEvent{NS: n.NS, Changes: changes}
		for _, fn := range listeners {
			fn(ev)
		}
	}
	return nil
}

func diffMaps(old, cur map[string]string) []ValueChange {
	var out []ValueChange
	for k, v := range cur {
		o, ok := old[k]
		switch {
		case !ok:
			out = append(out, ValueChange{Key: k, New: v, Op: "added"})
		case o != v:
			out = append(out, ValueChange{Key: k, Old: o, New: v, Op: "modified"})
		}
	}
	for k, v := range old {
		if _, ok := cur[k]; !ok {
			out = append(out, ValueChange{Key: k, Old: v, Op: "deleted"})
		}
	}
	return out
}

// OnChange registers fn to run after every change (on the watch goroutine;
// keep it short).
func (c *Client) OnChange(fn func(ChangeEvent)) {
	c.mu.Lock()
	c.listeners = append(c.listeners, fn)
	c.mu.Unlock()
}

// Watch calls fn with the old and new value whenever key of namespace ns
// changes (an added key has old ""; a deleted one has new ""). It runs on
// the watch goroutine, like OnChange.
func (c *Client) Watch(ns, key string, fn func(old, new string)) {
	c.OnChange(func(ev ChangeEvent) {
		if ev.NS != ns {
			return
		}
		for _, ch := range ev.Changes {
			if ch.Key == key {
				fn(ch.Old, ch.New)
			}
		}
	})
}

// Lookup returns a value from a namespace.
func (c *Client) Lookup(ns, key string) (string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := c.state[ns]
	if st == nil {
		return "", false
	}
	v, ok := st.cfg.Items[key]
	return v, ok
}

// String returns a value of the first namespace, or def.
func (c *Client) String(key, def string) string {
	if v, ok := c.Lookup(c.opts.Namespaces[0], key); ok {
		return v
	}
	return def
}

// Int returns an integer value of the first namespace, or def when absent or not a number.
func (c *Client) Int(key string, def int) int {
	if v, ok := c.Lookup(c.opts.Namespaces[0], key); ok {
		if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
			return n
		}
	}
	return def
}

// Bool returns a boolean value of the first namespace, or def.
func (c *Client) Bool(key string, def bool) bool {
	if v, ok := c.Lookup(c.opts.Namespaces[0], key); ok {
		if b, err := strconv.ParseBool(strings.TrimSpace(v)); err == nil {
			return b
		}
	}
	return def
}

// Float returns a float value of the first namespace, or def.
func (c *Client) Float(key string, def float64) float64 {
	if v, ok := c.Lookup(c.opts.Namespaces[0], key); ok {
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			return f
		}
	}
	return def
}

// Duration returns a duration value ("1.5s") of the first namespace, or def.
func (c *Client) Duration(key string, def time.Duration) time.Duration {
	if v, ok := c.Lookup(c.opts.Namespaces[0], key); ok {
		if d, err := time.ParseDuration(strings.TrimSpace(v)); err == nil {
			return d
		}
	}
	return def
}

// Content returns the document of a yaml/json/text namespace.
func (c *Client) Content(ns string) string {
	v, _ := c.Lookup(ns, ContentKey)
	return v
}

// Snapshot returns a copy of a namespace's values.
func (c *Client) Snapshot(ns string) map[string]string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := c.state[ns]
	if st == nil {
		return nil
	}
	out := make(map[string]string, len(st.cfg.Items))
	for k, v := range st.cfg.Items {
		out[k] = v
	}
	return out
}

// ReleaseKey reports which release of ns the client holds.
func (c *Client) ReleaseKey(ns string) string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if st := c.state[ns]; st != nil {
		return st.cfg.ReleaseKey
	}
	return ""
}

// FromCache reports whether ns is served from the disk copy because no
// server has answered yet.
func (c *Client) FromCache(ns string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	st := c.state[ns]
	return st != nil && st.fromCache
}

// Value is a typed, hot-reloaded view of a namespace made by Bind.
type Value[T any] struct {
	p   atomic.Pointer[T]
	err atomic.Pointer[error]
}

// Load returns the current value; it is replaced, never mutated, on change.
func (v *Value[T]) Load() *T { return v.p.Load() }

// Err returns the last binding error (a change that did not decode), or nil.
func (v *Value[T]) Err() error {
	if e := v.err.Load(); e != nil {
		return *e
	}
	return nil
}

// Bind decodes namespace ns into a T now and again after every change. A
// properties namespace fills fields tagged `config:"key"` (strings,
// numbers, bools, durations, comma-separated []string); a yaml or json
// namespace is decoded with its document's usual tags. A change that does
// not decode keeps the previous value and is reported by Err.
func Bind[T any](c *Client, ns string) (*Value[T], error) {
	v := &Value[T]{}
	decode := func() (*T, error) {
		c.mu.RLock()
		st := c.state[ns]
		c.mu.RUnlock()
		if st == nil {
			return nil, fmt.Errorf("%w: namespace %q is not loaded by this client", ErrNotFound, ns)
		}
		t := new(T)
		err := decodeInto(st.cfg.Format, st.cfg.Items, t)
		return t, err
	}
	t, err := decode()
	if err != nil {
		return nil, err
	}
	v.p.Store(t)
	c.OnChange(func(ev ChangeEvent) {
		if ev.NS != ns {
			return
		}
		t, err := decode()
		if err != nil {
			v.err.Store(&err)
			c.log.Warn("config: bind: change does not decode; keeping the previous value", "ns", ns, "err", err)
			return
		}
		v.err.Store(nil)
		v.p.Store(t)
	})
	return v, nil
}

func decodeInto(f Format, items map[string]string, dst any) error {
	switch f {
	case JSON:
		return json.Unmarshal([]byte(items[ContentKey]), dst)
	case YAML:
		return yaml.Unmarshal([]byte(items[ContentKey]), dst)
	case Text:
		return fmt.Errorf("%w: a text namespace cannot bind to a struct", ErrInvalid)
	}
	rv := reflect.ValueOf(dst).Elem()
	if rv.Kind() != reflect.Struct {
		return fmt.Errorf("%w: bind target must be a struct", ErrInvalid)
	}
	return fillStruct(rv, items)
}

func fillStruct(rv reflect.Value, items map[string]string) error {
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		if !f.IsExported() {
			continue
		}
		key := f.Tag.Get("config")
		if key == "" || key == "-" {
			continue
		}
		raw, ok := items[key]
		if !ok {
			continue
		}
		if err := setField(rv.Field(i), raw); err != nil {
			return fmt.Errorf("%w: key %q into field %s: %v", ErrInvalid, key, f.Name, err)
		}
	}
	return nil
}

var durationType = reflect.TypeOf(time.Duration(0))

func setField(fv reflect.Value, raw string) error {
	s := strings.TrimSpace(raw)
	if fv.Type() == durationType {
		d, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		fv.SetInt(int64(d))
		return nil
	}
	switch fv.Kind() {
	case reflect.String:
		fv.SetString(raw)
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return err
		}
		fv.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(s, 10, fv.Type().Bits())
		if err != nil {
			return err
		}
		fv.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		n, err := strconv.ParseUint(s, 10, fv.Type().Bits())
		if err != nil {
			return err
		}
		fv.SetUint(n)
	case reflect.Float32, reflect.Float64:
		n, err := strconv.ParseFloat(s, fv.Type().Bits())
		if err != nil {
			return err
		}
		fv.SetFloat(n)
	case reflect.Slice:
		if fv.Type().Elem().Kind() != reflect.String {
			return fmt.Errorf("unsupported slice type %s", fv.Type())
		}
		var parts []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		fv.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("unsupported field type %s", fv.Type())
	}
	return nil
}
