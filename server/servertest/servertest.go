// Package servertest starts real Tangram servers on 127.0.0.1:0 for tests,
// with a known admin token, and stops them when the test ends.
package servertest

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/server"
)

// AdminToken is the bootstrap admin token of test servers.
const AdminToken = "tgm_test-admin-token-0123456789abcdef"

// Harness is a running test server.
type Harness struct {
	Srv   *server.Server
	URL   string
	Token string
	Dir   string
}

// Option changes a test server's config.
type Option func(*server.Config)

// WithStore sets the store URL (default: SQLite in a temp dir).
func WithStore(dsn string) Option { return func(c *server.Config) { c.Store = dsn } }

// WithDataDir sets the data directory.
func WithDataDir(dir string) Option { return func(c *server.Config) { c.DataDir = dir } }

// WithSecretKey sets the secret key (servers sharing a store need the same).
func WithSecretKey(k []byte) Option { return func(c *server.Config) { c.SecretKey = k } }

// WithAddr sets the listen address.
func WithAddr(a string) Option { return func(c *server.Config) { c.HTTPAddr = a } }

// WithRPCAddr sets the RPC listen address.
func WithRPCAddr(a string) Option { return func(c *server.Config) { c.RPCAddr = a } }

// WithNodeName sets the server's registry node name.
func WithNodeName(n string) Option { return func(c *server.Config) { c.NodeName = n } }

// WithJobClaimAhead sets how early job fires are claimed.
func WithJobClaimAhead(d time.Duration) Option { return func(c *server.Config) { c.JobClaimAhead = d } }

// WithComponents picks the components the server runs (default all).
func WithComponents(names ...string) Option { return func(c *server.Config) { c.Components = names } }

// WithScanInterval sets the config release-message scan interval.
func WithScanInterval(d time.Duration) Option {
	return func(c *server.Config) { c.ConfigScanInterval = d }
}

// WithWebhookAllow lets job alarm webhooks reach these internal
// destinations (a test's webhook receiver on loopback).
func WithWebhookAllow(allow ...string) Option {
	return func(c *server.Config) { c.JobWebhookAllow = allow }
}

// WithConnLimits sets the per-listener connection cap and the idle timeout
// of connections that carried no authenticated request.
func WithConnLimits(maxConns int, anonIdle time.Duration) Option {
	return func(c *server.Config) { c.MaxConns, c.AnonIdleTimeout = maxConns, anonIdle }
}

// Start runs a server; it is shut down in t.Cleanup.
func Start(t testing.TB, opts ...Option) *Harness {
	t.Helper()
	dir := t.TempDir()
	cfg := server.Config{HTTPAddr: "127.0.0.1:0", RPCAddr: "127.0.0.1:0", BrokerAddr: "127.0.0.1:0", KVAddr: "127.0.0.1:0", OTLPHTTPAddr: "127.0.0.1:0", OTLPGRPCAddr: "127.0.0.1:0", BrokerSegmentSize: 8 << 20, DataDir: dir, BootstrapToken: AdminToken, Logger: logger()}
	// TANGRAM_TEST_STORE=postgres|mysql runs every test server on a fresh
	// database of that dialect instead of SQLite.
	if d := os.Getenv("TANGRAM_TEST_STORE"); d != "" && d != "sqlite" {
		cfg.Store = storetest.DSN(t, store.Dialect(d))
	}
	// Every API response of every test is held against the OpenAPI
	// document: a status it does not list, or a body with a field it does
	// not describe, fails the test.
	checker := apidoc.NewChecker(server.APIRoutes())
	var done atomic.Bool
	cfg.CheckAPIResponse = func(method, path, pattern string, status int, body []byte) {
		if err := checker.Check(pattern, status, body); err != nil && !done.Load() {
			t.Errorf("servertest: %s %s: %v", method, path, err)
		}
	}
	t.Cleanup(func() { done.Store(true) })
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatalf("servertest: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatalf("servertest: start: %v", err)
	}
	h := &Harness{Srv: srv, URL: srv.URL(), Token: AdminToken, Dir: cfg.DataDir}
	t.Cleanup(func() { _ = srv.Close() })
	return h
}

// Client returns an API client as the admin (or with another token).
func (h *Harness) Client(token ...string) *apiclient.Client {
	tok := h.Token
	if len(token) > 0 {
		tok = token[0]
	}
	return apiclient.New(h.URL, tok)
}

func logger() *slog.Logger {
	if os.Getenv("TANGRAM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// CacheDir returns a fresh directory for config client disk copies.
func CacheDir(t testing.TB) string { return filepath.Join(t.TempDir(), "cache") }
