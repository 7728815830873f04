package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/store"
)

// CreateEnv adds an environment and gives every app its default namespace in it.
func (s *Server) CreateEnv(ctx context.Context, actor string, e config.Env) (*config.Env, error) {
	if err := config.ValidName("env", e.Name); err != nil {
		return nil, err
	}
	e.CreatedAt = store.NowMillis()
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO config_envs (name, description, emergency_publish, created_at) VALUES (?, ?, ?, ?)`,
			e.Name, e.Description, b2i(e.EmergencyPublish), e.CreatedAt)
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("%w: environment %q", config.ErrExists, e.Name)
		}
		if err != nil {
			return err
		}
		apps, err := s.listApps(ctx, tx)
		if err != nil {
			return err
		}
		for _, a := range apps {
			if err := s.createDefaults(ctx, tx, e.Name, a.Name); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.env.create", Resource: "config/" + e.Name, After: audit.Value(e)})
	})
	if err != nil {
		return nil, err
	}
	return &e, nil
}

// UpdateEnv changes an environment's description and emergency-publish switch.
func (s *Server) UpdateEnv(ctx context.Context, actor string, e config.Env) (*config.Env, error) {
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		before, err := s.getEnv(ctx, tx, e.Name)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE config_envs SET description = ?, emergency_publish = ? WHERE name = ?`, e.Description, b2i(e.EmergencyPublish), e.Name); err != nil {
			return err
		}
		e.CreatedAt = before.CreatedAt
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.env.update", Resource: "config/" + e.Name, Before: audit.Value(before), After: audit.Value(e)})
	})
	if err != nil {
		return nil, err
	}
	return &e, nil
}

func (s *Server) getEnv(ctx context.Context, q store.Querier, name string) (*config.Env, error) {
	var e config.Env
	var em int
	err := q.QueryRowContext(ctx, `SELECT name, description, emergency_publish, created_at FROM config_envs WHERE name = ?`, name).Scan(&e.Name, &e.Description, &em, &e.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: environment %q", config.ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("config: load env: %w", err)
	}
	e.EmergencyPublish = em != 0
	return &e, nil
}

// ListEnvs lists environments by name.
func (s *Server) ListEnvs(ctx context.Context) ([]config.Env, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT name, description, emergency_publish, created_at FROM config_envs ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("config: list envs: %w", err)
	}
	defer rows.Close()
	var out []config.Env
	for rows.Next() {
		var e config.Env
		var em int
		if err := rows.Scan(&e.Name, &e.Description, &em, &e.CreatedAt); err != nil {
			return nil, err
		}
		e.EmergencyPublish = em != 0
		out = append(out, e)
	}
	return out, rows.Err()
}

// CreateApp adds an app with a default cluster and an "application"
// properties namespace in every environment.
func (s *Server) CreateApp(ctx context.Context, actor string, a config.App) (*config.App, error) {
	if err := config.ValidName("app", a.Name); err != nil {
		return nil, err
	}
	if a.Owner == "" {
		a.Owner = actor
	}
	if len(a.Owner) > 64 {
		return nil, fmt.Errorf("%w: owner %q is longer than 64 characters", config.ErrInvalid, a.Owner)
	}
	a.CreatedAt = store.NowMillis()
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO config_apps (name, owner, description, created_at) VALUES (?, ?, ?, ?)`, a.Name, a.Owner, a.Description, a.CreatedAt)
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("%w: app %q", config.ErrExists, a.Name)
		}
		if err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT name FROM config_envs`)
		if err != nil {
			return err
		}
		var envs []string
		for rows.Next() {
			var e string
			if err := rows.Scan(&e); err != nil {
				rows.Close()
				return err
			}
			envs = append(envs, e)
		}
		rows.Close()
		for _, e := range envs {
			if err := s.createDefaults(ctx, tx, e, a.Name); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.app.create", Resource: "config/*/" + a.Name, After: audit.Value(a)})
	})
	if err != nil {
		return nil, err
	}
	return &a, nil
}

func (s *Server) createDefaults(ctx context.Context, tx *store.Tx, env, app string) error {
	now := store.NowMillis()
	if _, err := tx.ExecContext(ctx, `INSERT INTO config_clusters (env, app, name, created_at) VALUES (?, ?, ?, ?)`, env, app, config.DefaultCluster, now); err != nil {
		return fmt.Errorf("config: create default cluster: %w", err)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO config_namespaces (env, app, cluster, name, format, link_app, last_editor, created_at) VALUES (?, ?, ?, ?, ?, '', '', ?)`,
		env, app, config.DefaultCluster, config.DefaultNamespace, string(config.Properties), now)
	if err != nil {
		return fmt.Errorf("config: create default namespace: %w", err)
	}
	return nil
}

func (s *Server) listApps(ctx context.Context, q store.Querier) ([]config.App, error) {
	rows, err := q.QueryContext(ctx, `SELECT name, owner, description, created_at FROM config_apps ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("config: list apps: %w", err)
	}
	defer rows.Close()
	var out []config.App
	for rows.Next() {
		var a config.App
		if err := rows.Scan(&a.Name, &a.Owner, &a.Description, &a.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// ListApps lists apps by name.
func (s *Server) ListApps(ctx context.Context) ([]config.App, error) { return s.listApps(ctx, s.st) }

// GetApp loads one app.
func (s *Server) GetApp(ctx context.Context, name string) (*config.App, error) {
	var a config.App
	err := s.st.QueryRowContext(ctx, `SELECT name, owner, description, created_at FROM config_apps WHERE name = ?`, name).Scan(&a.Name, &a.Owner, &a.Description, &a.CreatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: app %q", config.ErrNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("config: load app: %w", err)
	}
	return &a, nil
}

// CreateCluster adds a named cluster (e.g. a data centre) to an app in an
// environment, with the same namespaces as its default cluster (empty).
// Clients in a cluster read its namespaces and fall back to the default
// cluster for namespaces it has no release of.
func (s *Server) CreateCluster(ctx context.Context, actor, env, app, name string) error {
	if err := config.ValidName("cluster", name); err != nil {
		return err
	}
	return s.st.InTx(ctx, func(tx *store.Tx) error {
		if _, err := s.getEnv(ctx, tx, env); err != nil {
			return err
		}
		if _, err := s.GetApp(ctx, app); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO config_clusters (env, app, name, created_at) VALUES (?, ?, ?, ?)`, env, app, name, store.NowMillis())
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("%w: cluster %q of %s/%s", config.ErrExists, name, env, app)
		}
		if err != nil {
			return err
		}
		nss, err := s.listNamespaces(ctx, tx, env, app, config.DefaultCluster)
		if err != nil {
			return err
		}
		for _, ns := range nss {
			if _, err := tx.ExecContext(ctx, `INSERT INTO config_namespaces (env, app, cluster, name, format, is_public, link_app, last_editor, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?)`,
				env, app, name, ns.NS, string(ns.Format), b2i(ns.Public), ns.LinkApp, store.NowMillis()); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.cluster.create", Resource: "config/" + env + "/" + app + "/" + name})
	})
}

// ListClusters lists an app's clusters in an environment.
func (s *Server) ListClusters(ctx context.Context, env, app string) ([]string, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT name FROM config_clusters WHERE env = ? AND app = ? ORDER BY name`, env, app)
	if err != nil {
		return nil, fmt.Errorf("config: list clusters: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		if err := s.explainMissing(ctx, config.Coord{Env: env, App: app}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// CreateNamespace adds a namespace to a cluster.
func (s *Server) CreateNamespace(ctx context.Context, actor, env, app, cluster string, spec config.NamespaceSpec) (*config.Namespace, error) {
	c := config.Coord{Env: env, App: app, Cluster: cluster, NS: spec.Name}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	var format config.Format
	var err error
	if spec.Format == "" {
		format = config.FormatFromName(spec.Name)
	} else if format, err = config.ParseFormat(spec.Format); err != nil {
		return nil, err
	}
	if spec.Public && spec.LinkApp != "" {
		return nil, fmt.Errorf("%w: a namespace is either public or linked to another app's public namespace, not both", config.ErrInvalid)
	}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM config_clusters WHERE env = ? AND app = ? AND name = ?`, env, app, cluster).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			if err := s.explainMissing(ctx, c); err != nil {
				return err
			}
			return fmt.Errorf("%w: cluster %q of %s/%s", config.ErrNotFound, cluster, env, app)
		}
		if spec.LinkApp != "" {
			var pf string
			err := tx.QueryRowContext(ctx, `SELECT format FROM config_namespaces WHERE env = ? AND app = ? AND name = ? AND is_public = 1 ORDER BY id LIMIT 1`, env, spec.LinkApp, spec.Name).Scan(&pf)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w: public namespace %q of app %q in %s", config.ErrNotFound, spec.Name, spec.LinkApp, env)
			}
			if err != nil {
				return err
			}
			format = config.Format(pf)
		}
		if spec.Public {
			var owner string
			err := tx.QueryRowContext(ctx, `SELECT app FROM config_namespaces WHERE env = ? AND name = ? AND is_public = 1 AND app <> ? LIMIT 1`, env, spec.Name, app).Scan(&owner)
			if err == nil {
				return fmt.Errorf("%w: public namespace %q already belongs to app %q in %s", config.ErrExists, spec.Name, owner, env)
			}
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO config_namespaces (env, app, cluster, name, format, is_public, link_app, last_editor, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, '', ?)`,
			env, app, cluster, spec.Name, string(format), b2i(spec.Public), spec.LinkApp, store.NowMillis())
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("%w: namespace %s", config.ErrExists, c)
		}
		if err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.namespace.create", Resource: "config/" + c.String(), After: audit.Value(spec)})
	})
	if err != nil {
		return nil, err
	}
	return s.Namespace(ctx, c)
}

const nsCols = `id, env, app, cluster, name, format, is_public, link_app, require_approval, separate_publisher, draft_version, last_editor, release_id, created_at`

func scanNS(sc interface{ Scan(...any) error }) (*config.Namespace, error) {
	var ns config.Namespace
	var format string
	var pub, ra, sp int
	err := sc.Scan(&ns.ID, &ns.Env, &ns.App, &ns.Cluster, &ns.NS, &format, &pub, &ns.LinkApp, &ra, &sp, &ns.DraftVersion, &ns.LastEditor, &ns.ReleaseID, &ns.CreatedAt)
	if err != nil {
		return nil, err
	}
	ns.Format, ns.Public, ns.RequireApproval, ns.SeparatePublisher = config.Format(format), pub != 0, ra != 0, sp != 0
	return &ns, nil
}

func (s *Server) listNamespaces(ctx context.Context, q store.Querier, env, app, cluster string) ([]config.Namespace, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+nsCols+` FROM config_namespaces WHERE env = ? AND app = ? AND cluster = ? ORDER BY name`, env, app, cluster)
	if err != nil {
		return nil, fmt.Errorf("config: list namespaces: %w", err)
	}
	defer rows.Close()
	var out []config.Namespace
	for rows.Next() {
		ns, err := scanNS(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *ns)
	}
	return out, rows.Err()
}

// ListNamespaces lists a cluster's namespaces.
func (s *Server) ListNamespaces(ctx context.Context, env, app, cluster string) ([]config.Namespace, error) {
	out, err := s.listNamespaces(ctx, s.st, env, app, cluster)
	if err == nil && len(out) == 0 {
		if err := s.explainMissing(ctx, config.Coord{Env: env, App: app, Cluster: cluster}); err != nil {
			return nil, err
		}
	}
	return out, err
}

// Namespace loads one namespace.
func (s *Server) Namespace(ctx context.Context, c config.Coord) (*config.Namespace, error) {
	return s.loadNS(ctx, s.st, c)
}

func (s *Server) loadNS(ctx context.Context, q store.Querier, c config.Coord) (*config.Namespace, error) {
	ns, err := scanNS(q.QueryRowContext(ctx, `SELECT `+nsCols+` FROM config_namespaces WHERE env = ? AND app = ? AND cluster = ? AND name = ?`, c.Env, c.App, c.Cluster, c.NS))
	if errors.Is(err, sql.ErrNoRows) {
		if err := s.explainMissing(ctx, c); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: namespace %q in %s/%s/%s", config.ErrNotFound, c.NS, c.Env, c.App, c.Cluster)
	}
	if err != nil {
		return nil, fmt.Errorf("config: load namespace %s: %w", c, err)
	}
	return ns, nil
}

// explainMissing names the first missing part of c (env, app, cluster).
func (s *Server) explainMissing(ctx context.Context, c config.Coord) error {
	var n int
	if c.Env != "" {
		if err := s.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM config_envs WHERE name = ?`, c.Env).Scan(&n); err == nil && n == 0 {
			return fmt.Errorf("%w: environment %q", config.ErrNotFound, c.Env)
		}
	}
	if c.App != "" {
		if err := s.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM config_apps WHERE name = ?`, c.App).Scan(&n); err == nil && n == 0 {
			return fmt.Errorf("%w: app %q", config.ErrNotFound, c.App)
		}
	}
	if c.Cluster != "" {
		if err := s.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM config_clusters WHERE env = ? AND app = ? AND name = ?`, c.Env, c.App, c.Cluster).Scan(&n); err == nil && n == 0 {
			return fmt.Errorf("%w: cluster %q of app %q in %s", config.ErrNotFound, c.Cluster, c.App, c.Env)
		}
	}
	return nil
}

// UpdateSettings changes a namespace's release rules.
func (s *Server) UpdateSettings(ctx context.Context, actor string, c config.Coord, set config.Settings) (*config.Namespace, error) {
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, err := s.loadNS(ctx, tx, c)
		if err != nil {
			return err
		}
		ra, sp := ns.RequireApproval, ns.SeparatePublisher
		if set.RequireApproval != nil {
			ra = *set.RequireApproval
		}
		if set.SeparatePublisher != nil {
			sp = *set.SeparatePublisher
		}
		if _, err := tx.ExecContext(ctx, `UPDATE config_namespaces SET require_approval = ?, separate_publisher = ? WHERE id = ?`, b2i(ra), b2i(sp), ns.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.namespace.settings", Resource: "config/" + c.String(),
			Before: fmt.Sprintf("require_approval=%v separate_publisher=%v", ns.RequireApproval, ns.SeparatePublisher),
			After:  fmt.Sprintf("require_approval=%v separate_publisher=%v", ra, sp)})
	})
	if err != nil {
		return nil, err
	}
	return s.Namespace(ctx, c)
}
