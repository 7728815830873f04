// Package ruleconfig keeps sharding rules in the config center: the rules
// file is the document of a yaml namespace, and every release of it
// reaches each driver and proxy that watches it as the config client's
// push arrives (within a second), gray releases included. A release that
// does not parse is refused by every watcher — logged, reported by Err,
// the rules before it kept — so a typo never half-applies.
//
//	c, _ := config.NewClient(ctx, config.ClientConfig{Servers: …, Env: "prod", App: "shop",
//		Namespaces: []string{"sharding.yaml"}})
//	conn, watcher, _ := ruleconfig.Connector(c, "sharding.yaml", sqldriver.Config{})
//	db := sql.OpenDB(conn)
package ruleconfig

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/shard"
	"github.com/tangram-dev/tangram/shard/sqldriver"
)

// Watcher follows the rules in one namespace of a config client.
type Watcher struct {
	c   *config.Client
	ns  string
	log *slog.Logger

	mu      sync.Mutex
	last    string // the document last parsed (applied or refused)
	rules   *shard.Rules
	err     error
	apply   func(*shard.Rules) error
	stopped bool
	applied int
}

// Open reads the rules in namespace ns (which c loads) now. Start
// applies the releases that follow.
func Open(c *config.Client, ns string, log *slog.Logger) (*Watcher, error) {
	if log == nil {
		log = slog.Default()
	}
	doc := c.Content(ns)
	if doc == "" {
		return nil, fmt.Errorf("ruleconfig: namespace %s holds no rules: publish the rules file as its content (a yaml namespace), and list %s in the client's Namespaces", ns, ns)
	}
	r, err := shard.ParseRules([]byte(doc))
	if err != nil {
		return nil, fmt.Errorf("ruleconfig: namespace %s: %w", ns, err)
	}
	w := &Watcher{c: c, ns: ns, log: log.With("component", "shard-rules", "namespace", ns), last: doc, rules: r}
	c.OnChange(func(ev config.ChangeEvent) {
		if ev.NS == ns {
			w.refresh()
		}
	})
	return w, nil
}

// Rules are the rules applied last (Open's until Start applies others).
func (w *Watcher) Rules() *shard.Rules {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rules
}

// Err is why the latest release was refused (nil when it was applied).
func (w *Watcher) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Applied is how many releases Start's apply has taken.
func (w *Watcher) Applied() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.applied
}

// Start calls apply with every release from now on that parses (and
// at once with one that came since Open). apply runs on the config
// client's watch goroutine, one call at a time; an error from it keeps
// the rules before.
func (w *Watcher) Start(apply func(*shard.Rules) error) {
	w.mu.Lock()
	w.apply = apply
	w.mu.Unlock()
	w.refresh()
}

// Stop stops applying releases (the config client's own Close ends the
// watch).
func (w *Watcher) Stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

func (w *Watcher) refresh() {
	w.mu.Lock()
	defer w.mu.Unlock()
	doc := w.c.Content(w.ns)
	if w.apply == nil || w.stopped || doc == w.last {
		return
	}
	w.last = doc
	if doc == "" {
		w.err = errors.New("ruleconfig: the namespace's release holds no rules (kept the rules before)")
		w.log.Error("sharding rules refused", "err", w.err)
		return
	}
	r, err := shard.ParseRules([]byte(doc))
	if err == nil {
		err = w.apply(r)
	}
	if err != nil {
		w.err = fmt.Errorf("ruleconfig: namespace %s: %w (kept the rules before)", w.ns, err)
		w.log.Error("sharding rules refused", "err", err)
		return
	}
	w.rules, w.err = r, nil
	w.applied++
	w.log.Info("sharding rules applied", "release", w.c.ReleaseKey(w.ns), "tables", len(r.Tables()))
}

// Connector opens a driver connector on the rules in namespace ns of c
// and keeps it on the latest release (sql.OpenDB(conn) gives the
// *sql.DB).
func Connector(c *config.Client, ns string, cfg sqldriver.Config) (*sqldriver.Connector, *Watcher, error) {
	w, err := Open(c, ns, nil)
	if err != nil {
		return nil, nil, err
	}
	conn, err := sqldriver.NewConnector(w.Rules(), cfg)
	if err != nil {
		return nil, nil, err
	}
	w.Start(conn.Update)
	return conn, w, nil
}
