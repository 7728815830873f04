package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/tangram-dev/tangram/config"

	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/store"
)

type grayRow struct {
	overlay, pubOverlay config.Overlay
	rules, pubRules     config.Rules
	published           bool
	releaseID           int64
	updatedBy           string
	updatedAt           int64
}

func (s *Server) loadGray(ctx context.Context, q store.Querier, nsID int64) (*grayRow, error) {
	var ov, rules, pov, prules string
	g := &grayRow{}
	err := q.QueryRowContext(ctx, `SELECT overlay, rules, published_overlay, published_rules, release_id, updated_by, updated_at FROM config_grays WHERE ns_id = ?`, nsID).
		Scan(&ov, &rules, &pov, &prules, &g.releaseID, &g.updatedBy, &g.updatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("config: load gray: %w", err)
	}
	for _, p := range []struct {
		raw string
		dst any
	}{{ov, &g.overlay}, {rules, &g.rules}, {pov, &g.pubOverlay}, {prules, &g.pubRules}} {
		if p.raw == "" {
			continue
		}
		if err := json.Unmarshal([]byte(p.raw), p.dst); err != nil {
			return nil, fmt.Errorf("config: corrupt gray branch: %w", err)
		}
	}
	g.published = pov != ""
	return g, nil
}

// loadNSGray loads a namespace and its gray branch (nil when it has none).
func (s *Server) loadNSGray(ctx context.Context, q store.Querier, c config.Coord) (*config.Namespace, *grayRow, error) {
	ns, err := s.loadNS(ctx, q, c)
	if err != nil {
		return nil, nil, err
	}
	g, err := s.loadGray(ctx, q, ns.ID)
	return ns, g, err
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func (s *Server) saveGray(ctx context.Context, tx *store.Tx, nsID int64, g *grayRow) error {
	pov, prules := "", ""
	if g.published {
		pov, prules = jsonString(g.pubOverlay), jsonString(g.pubRules)
	}
	res, err := tx.ExecContext(ctx, `UPDATE config_grays SET overlay = ?, rules = ?, published_overlay = ?, published_rules = ?, release_id = ?, updated_by = ?, updated_at = ? WHERE ns_id = ?`,
		jsonString(g.overlay), jsonString(g.rules), pov, prules, g.releaseID, g.updatedBy, g.updatedAt, nsID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n > 0 {
		return nil
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO config_grays (ns_id, overlay, rules, published_overlay, published_rules, release_id, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		nsID, jsonString(g.overlay), jsonString(g.rules), pov, prules, g.releaseID, g.updatedBy, g.updatedAt)
	return err
}

// GetGray returns the gray branch of a namespace (ErrNotFound when none).
func (s *Server) GetGray(ctx context.Context, c config.Coord) (*config.Gray, error) {
	ns, err := s.Namespace(ctx, c)
	if err != nil {
		return nil, err
	}
	g, err := s.loadGray(ctx, s.st, ns.ID)
	if err != nil {
		return nil, err
	}
	if g == nil {
		return nil, fmt.Errorf("%w: %s has no gray branch", config.ErrNotFound, c)
	}
	main, err := s.currentSnapshot(ctx, s.st, ns)
	if err != nil {
		return nil, err
	}
	out := &config.Gray{Overlay: maskOverlay(g.overlay), Rules: g.rules, UpdatedBy: g.updatedBy, UpdatedAt: g.updatedAt, Changes: config.Diff(main, g.overlay.Apply(main))}
	if g.published {
		out.Published = &struct {
			Overlay   config.Overlay `json:"overlay"`
			Rules     config.Rules   `json:"rules"`
			ReleaseID int64          `json:"release_id"`
		}{maskOverlay(g.pubOverlay), g.pubRules, g.releaseID}
	}
	return out, nil
}

func maskOverlay(o config.Overlay) config.Overlay {
	out := config.Overlay{Delete: o.Delete}
	for _, it := range o.Set {
		if it.Secret {
			it.Value = config.Masked
		}
		out.Set = append(out.Set, it)
	}
	return out
}

// EditGray changes the gray branch draft, creating the branch if needed.
func (s *Server) EditGray(ctx context.Context, actor string, c config.Coord, e config.GrayEdit) (*config.Gray, error) {
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, g, err := s.loadNSGray(ctx, tx, c)
		if err != nil {
			return err
		}
		if ns.ReleaseID == 0 {
			return fmt.Errorf("%w: publish %s once before starting a gray release", config.ErrInvalid, c)
		}
		if g == nil {
			g = &grayRow{}
		}
		before := jsonString(maskOverlay(g.overlay))
		for _, it := range e.Set {
			if err := s.checkItem(ns, it); err != nil {
				return err
			}
			if ns.Format == config.YAML || ns.Format == config.JSON {
				if err := config.Validate(ns.Format, it.Value); err != nil {
					return err
				}
			}
			v := it.Value
			if it.Secret {
				v = s.cipher.Seal(v)
			}
			g.overlay.Put(config.SnapItem{Key: it.Key, Value: v, Secret: it.Secret})
		}
		for _, k := range e.Delete {
			if ns.Format != config.Properties {
				return fmt.Errorf("%w: a %s namespace's gray branch replaces its document; set %q instead of deleting", config.ErrInvalid, ns.Format, config.ContentKey)
			}
			if err := config.ValidKey(k); err != nil {
				return err
			}
			g.overlay.Remove(k)
		}
		for _, k := range e.Unset {
			g.overlay.Forget(k)
		}
		if e.Rules != nil {
			if err := e.Rules.Validate(); err != nil {
				return err
			}
			g.rules = *e.Rules
		}
		g.updatedBy, g.updatedAt = actor, store.NowMillis()
		if err := s.saveGray(ctx, tx, ns.ID, g); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.gray.edit", Resource: "config/" + c.String(), Before: before,
			After: jsonString(map[string]any{"overlay": maskOverlay(g.overlay), "rules": g.rules})})
	})
	if err != nil {
		return nil, err
	}
	return s.GetGray(ctx, c)
}

// PublishGray makes the gray draft (overlay and rules) live for the
// clients the rules select. Others keep seeing the main release.
func (s *Server) PublishGray(ctx context.Context, actor string, c config.Coord, comment string) (*config.Release, error) {
	var rel *config.Release
	var notes []notice
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, g, err := s.loadNSGray(ctx, tx, c)
		if err != nil {
			return err
		}
		if g == nil || g.overlay.Empty() {
			return fmt.Errorf("%w: %s has no gray changes to publish", config.ErrInvalid, c)
		}
		if err := g.rules.Validate(); err != nil {
			return err
		}
		if len(g.rules.IPs)+len(g.rules.Labels)+len(g.rules.Instances) == 0 && g.rules.Percent == 0 {
			return fmt.Errorf("%w: gray rules of %s select no client; set IPs, labels, instances or a percentage", config.ErrInvalid, c)
		}
		main, err := s.currentSnapshot(ctx, tx, ns)
		if err != nil {
			return err
		}
		snap := g.overlay.Apply(main)
		if err := s.validateSnapshot(ns, snap); err != nil {
			return err
		}
		if comment == "" {
			comment = "gray " + describeRules(g.rules)
		}
		rel, notes, err = s.insertRelease(ctx, tx, ns, config.KindGray, comment, actor, snap, ns.ReleaseID)
		if err != nil {
			return err
		}
		rel.Changes = config.Diff(main, snap)
		g.pubOverlay, g.pubRules, g.published, g.releaseID = g.overlay, g.rules, true, rel.ID
		g.updatedBy, g.updatedAt = actor, store.NowMillis()
		if err := s.saveGray(ctx, tx, ns.ID, g); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.gray.publish", Resource: "config/" + c.String(),
			After: jsonString(map[string]any{"release": rel.ID, "rules": g.rules, "changes": rel.Changes})})
	})
	if err != nil {
		return nil, err
	}
	s.notify(notes)
	return rel, nil
}

func describeRules(r config.Rules) string {
	var parts []string
	if len(r.IPs) > 0 {
		parts = append(parts, "ips="+strings.Join(r.IPs, ","))
	}
	if len(r.Labels) > 0 {
		parts = append(parts, "labels="+strings.Join(r.Labels, ","))
	}
	if len(r.Instances) > 0 {
		parts = append(parts, "instances="+strings.Join(r.Instances, ","))
	}
	if r.Percent > 0 {
		parts = append(parts, fmt.Sprintf("percent=%d", r.Percent))
	}
	return strings.Join(parts, " ")
}

// PromoteGray merges the published gray overlay into the main release (a
// new release for everyone) and into the draft, and removes the branch. It
// follows the namespace's release rules like Publish.
func (s *Server) PromoteGray(ctx context.Context, actor string, c config.Coord, req config.PublishRequest) (*config.Release, error) {
	var rel *config.Release
	var notes []notice
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, g, err := s.loadNSGray(ctx, tx, c)
		if err != nil {
			return err
		}
		if g == nil || !g.published {
			return fmt.Errorf("%w: %s has no published gray release to promote", config.ErrInvalid, c)
		}
		if err := s.releaseGate(ctx, tx, ns, req.Emergency, "approval; promote with an emergency publish, or set the gray values in the draft and request a release"); err != nil {
			return err
		}
		main, err := s.currentSnapshot(ctx, tx, ns)
		if err != nil {
			return err
		}
		snap := g.pubOverlay.Apply(main)
		comment := req.Comment
		if comment == "" {
			comment = "promote gray " + describeRules(g.pubRules)
		}
		rel, notes, err = s.insertRelease(ctx, tx, ns, config.KindPromote, comment, actor, snap, ns.ReleaseID)
		if err != nil {
			return err
		}
		rel.Changes = config.Diff(main, snap)
		now := store.NowMillis()
		for _, k := range g.pubOverlay.Delete {
			if _, err := tx.ExecContext(ctx, `DELETE FROM config_items WHERE ns_id = ? AND item_key = ?`, ns.ID, k); err != nil {
				return err
			}
		}
		for _, it := range g.pubOverlay.Set {
			res, err := tx.ExecContext(ctx, `UPDATE config_items SET value = ?, secret = ?, updated_by = ?, updated_at = ? WHERE ns_id = ? AND item_key = ?`,
				it.Value, b2i(it.Secret), actor, now, ns.ID, it.Key)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				if _, err := tx.ExecContext(ctx, `INSERT INTO config_items (ns_id, item_key, value, secret, comment, position, updated_by, updated_at) VALUES (?, ?, ?, ?, '', 0, ?, ?)`,
					ns.ID, it.Key, it.Value, b2i(it.Secret), actor, now); err != nil {
					return err
				}
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE config_namespaces SET draft_version = draft_version + 1 WHERE id = ?`, ns.ID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM config_grays WHERE ns_id = ?`, ns.ID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.gray.promote", Resource: "config/" + c.String(),
			After: jsonString(map[string]any{"release": rel.ID, "changes": rel.Changes, "emergency": req.Emergency})})
	})
	if err != nil {
		return nil, err
	}
	s.notify(notes)
	return rel, nil
}

// AbandonGray drops the gray branch; gray clients return to the main release.
func (s *Server) AbandonGray(ctx context.Context, actor string, c config.Coord) error {
	var notes []notice
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, g, err := s.loadNSGray(ctx, tx, c)
		if err != nil {
			return err
		}
		if g == nil {
			return fmt.Errorf("%w: %s has no gray branch", config.ErrNotFound, c)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM config_grays WHERE ns_id = ?`, ns.ID); err != nil {
			return err
		}
		if g.published {
			if notes, err = s.writeMessages(ctx, tx, ns); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.gray.abandon", Resource: "config/" + c.String(),
			Before: jsonString(map[string]any{"overlay": maskOverlay(g.overlay), "rules": g.rules})})
	})
	if err != nil {
		return err
	}
	s.notify(notes)
	return nil
}
