package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/tangram-dev/tangram/registry"

	"golang.org/x/sync/errgroup"

	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/rpc"
)

// Persistent instances are rows in the SQL store: they survive restarts of
// every server, and are probed rather than renewed by heartbeats.

func (r *Registry) savePersistent(ctx context.Context, in *registry.Instance) error {
	if len(in.ID) > 191 {
		return fmt.Errorf("%w instance id: persistent instance ids are at most 191 bytes", registry.ErrInvalid)
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	now := r.now().UnixMilli()
	return r.cfg.Store.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE registry_instances SET body = ?, version = ?, updated_at = ?
			WHERE namespace = ? AND grp = ? AND service = ? AND id = ?`,
			string(body), in.Version, now, in.Namespace, in.Group, in.Service, in.ID)
		if err != nil {
			return fmt.Errorf("registry: saving instance: %w", err)
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO registry_instances (namespace, grp, service, id, body, version, updated_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, in.Namespace, in.Group, in.Service, in.ID, string(body), in.Version, now)
		if err != nil {
			return fmt.Errorf("registry: saving instance: %w", err)
		}
		return nil
	})
}

func (r *Registry) deletePersistent(ctx context.Context, k registry.Key, id string) error {
	_, err := r.cfg.Store.ExecContext(ctx, `DELETE FROM registry_instances WHERE namespace = ? AND grp = ? AND service = ? AND id = ?`,
		k.Namespace, k.Group, k.Service, id)
	if err != nil {
		return fmt.Errorf("registry: deleting instance: %w", err)
	}
	return nil
}

// reload makes memory match the store's persistent instances (written by
// this or another server); health stays as probed here.
func (r *Registry) reload(ctx context.Context) error {
	rows, err := r.cfg.Store.QueryContext(ctx, `SELECT body FROM registry_instances`)
	if err != nil {
		return fmt.Errorf("registry: loading persistent instances: %w", err)
	}
	defer rows.Close()
	type ref struct {
		k  registry.Key
		id string
	}
	seen := map[ref]*registry.Instance{}
	for rows.Next() {
		var body string
		if err := rows.Scan(&body); err != nil {
			return err
		}
		var in registry.Instance
		if err := json.Unmarshal([]byte(body), &in); err != nil {
			r.log.Error("registry: unreadable persistent instance row; skipped", "err", err)
			continue
		}
		in.Ephemeral = false
		seen[ref{in.Key, in.ID}] = &in
	}
	if err := rows.Err(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for ref, in := range seen {
		s := r.svc(ref.k, true)
		cur := s.instances.get(ref.id)
		if cur != nil && cur.Version >= in.Version {
			continue
		}
		if cur != nil {
			in.Healthy = cur.Healthy
		}
		r.intern(s, in)
		s.instances.put(ref.id, in)
		r.emit(ref.k, s, registry.EventPut, in)
	}
	for k, s := range r.services {
		for id, in := range s.instances.all() {
			if !in.Ephemeral && seen[ref{k, id}] == nil {
				r.removeLocked(k, id)
			}
		}
	}
	return nil
}

// reloadOnce reads persistent instances written by other servers.
func (r *Registry) reloadOnce() {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.ReloadInterval*2)
	defer cancel()
	if err := r.reload(ctx); err != nil && r.ctx.Err() == nil {
		r.log.Warn("registry: reloading persistent instances failed; keeping what is in memory", "err", err)
	}
}

func (r *Registry) probeAll() {
	r.mu.RLock()
	var targets []*registry.Instance
	for _, s := range r.services {
		for _, in := range s.instances.all() {
			if !in.Ephemeral {
				targets = append(targets, in)
			}
		}
	}
	r.mu.RUnlock()
	ok := make([]bool, len(targets))
	var g errgroup.Group
	g.SetLimit(32)
	for i, in := range targets {
		g.Go(func() error {
			ctx, cancel := context.WithTimeout(r.ctx, r.cfg.ProbeTimeout)
			defer cancel()
			ok[i] = probe(ctx, in) == nil
			return nil
		})
	}
	g.Wait()
	if r.ctx.Err() != nil {
		return
	}
	r.applyProbes(targets, ok)
}

// Probe damping (HAProxy's rise/fall): health changes only after this many
// probes in a row disagree with it, so one lost packet does not flap an
// instance in and out of every client's list.
const (
	probeRise = 2
	probeFall = 2
)

func (r *Registry) applyProbes(targets []*registry.Instance, ok []bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, t := range targets {
		s := r.svc(t.Key, false)
		if s == nil {
			continue
		}
		in := s.instances.get(t.ID)
		tk := tombKey{t.Key, t.ID}
		if in == nil || in.Ephemeral || in.Healthy == ok[i] {
			delete(r.streaks, tk)
			continue
		}
		r.streaks[tk]++
		need := probeFall
		if ok[i] {
			need = probeRise
		}
		if r.streaks[tk] < need {
			continue
		}
		delete(r.streaks, tk)
		c := in.Clone()
		c.Healthy = ok[i]
		s.instances.put(t.ID, c)
		r.log.Info("registry: probe changed health", "service", t.Key.String(), "id", in.ID, "healthy", ok[i])
		r.emit(t.Key, s, registry.EventPut, c)
	}
}

// probe checks one persistent instance.
func probe(ctx context.Context, in *registry.Instance) error {
	kind := in.Metadata[registry.MetaProbe]
	switch {
	case kind == "" || kind == "tcp":
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", in.Addr())
		if err != nil {
			return err
		}
		return c.Close()
	case strings.HasPrefix(kind, "http:"):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+in.Addr()+strings.TrimPrefix(kind, "http:"), nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 400 {
			return fmt.Errorf("probe: HTTP %d", resp.StatusCode)
		}
		return nil
	case kind == "rpc":
		return rpc.Ping(ctx, in.Addr())
	}
	return fmt.Errorf("probe: unknown kind %q", kind)
}
