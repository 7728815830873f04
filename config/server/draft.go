package server

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/store"
)

// Items returns a namespace's draft items (secrets masked unless reveal).
func (s *Server) Items(ctx context.Context, c config.Coord, reveal bool) ([]config.Item, error) {
	ns, err := s.Namespace(ctx, c)
	if err != nil {
		return nil, err
	}
	items, err := s.items(ctx, s.st, ns.ID)
	if err != nil {
		return nil, err
	}
	for i := range items {
		items[i].Value = s.present(items[i].Value, items[i].Secret, reveal)
	}
	return items, nil
}

func (s *Server) present(v string, secret, reveal bool) string {
	if !secret {
		return v
	}
	if !reveal {
		return config.Masked
	}
	plain, err := s.cipher.Open(v)
	if err != nil {
		s.log.Error("decrypt secret", "err", err)
		return config.Masked
	}
	return plain
}

func (s *Server) items(ctx context.Context, q store.Querier, nsID int64) ([]config.Item, error) {
	rows, err := q.QueryContext(ctx, `SELECT item_key, value, secret, comment, updated_by, updated_at FROM config_items WHERE ns_id = ? ORDER BY item_key`, nsID)
	if err != nil {
		return nil, fmt.Errorf("config: load items: %w", err)
	}
	defer rows.Close()
	var out []config.Item
	for rows.Next() {
		var it config.Item
		var sec int
		if err := rows.Scan(&it.Key, &it.Value, &sec, &it.Comment, &it.UpdatedBy, &it.UpdatedAt); err != nil {
			return nil, err
		}
		it.Secret = sec != 0
		out = append(out, it)
	}
	return out, rows.Err()
}

// checkItem validates an item for a namespace's format and size limit.
func (s *Server) checkItem(ns *config.Namespace, it config.Item) error {
	if ns.Format == config.Properties {
		if err := config.ValidKey(it.Key); err != nil {
			return err
		}
	} else if it.Key != config.ContentKey {
		return fmt.Errorf("%w: namespace %s is %s; its one item is %q, not %q", config.ErrInvalid, ns.Coord, ns.Format, config.ContentKey, it.Key)
	}
	if len(it.Value) > s.cfg.MaxValueBytes {
		return fmt.Errorf("%w: value of %q is %d bytes; the limit is %d", config.ErrTooLarge, it.Key, len(it.Value), s.cfg.MaxValueBytes)
	}
	if !validUTF8(it.Value) {
		return fmt.Errorf("%w: value of %q is not valid UTF-8", config.ErrInvalid, it.Key)
	}
	return nil
}

// EditDraft applies a batch of changes to a namespace's draft in one
// transaction and returns the new draft version.
func (s *Server) EditDraft(ctx context.Context, actor string, c config.Coord, e config.Edit) (int64, error) {
	var version int64
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, err := s.loadNS(ctx, tx, c)
		if err != nil {
			return err
		}
		if e.Version != nil && *e.Version != ns.DraftVersion {
			return &config.ConflictError{Current: ns.DraftVersion, Given: *e.Version}
		}
		existing, err := s.items(ctx, tx, ns.ID)
		if err != nil {
			return err
		}
		old := make(map[string]config.Item, len(existing))
		for _, it := range existing {
			old[it.Key] = it
		}
		var before, after []config.Change
		now := store.NowMillis()
		keep := map[string]bool{}
		for _, it := range e.Set {
			if err := s.checkItem(ns, it); err != nil {
				return err
			}
			keep[it.Key] = true
			stored := it.Value
			prev, had := old[it.Key]
			if it.Secret && it.Value == config.Masked {
				// The mask is what exports and listings show in place of
				// a secret; written back, it means "keep the value".
				if !had || !prev.Secret {
					return fmt.Errorf("%w: the value of secret %q is the mask %s, and there is no stored secret to keep; send the real value", config.ErrInvalid, it.Key, config.Masked)
				}
				if prev.Comment == it.Comment {
					continue
				}
				stored = prev.Value
			} else if it.Secret {
				stored = s.cipher.Seal(it.Value)
			}
			if had {
				if !prev.Secret && !it.Secret && prev.Value == it.Value && prev.Comment == it.Comment {
					continue
				}
				_, err = tx.ExecContext(ctx, `UPDATE config_items SET value = ?, secret = ?, comment = ?, updated_by = ?, updated_at = ? WHERE ns_id = ? AND item_key = ?`,
					stored, b2i(it.Secret), it.Comment, actor, now, ns.ID, it.Key)
				before = append(before, config.Change{Key: it.Key, Old: maskIf(prev.Value, prev.Secret)})
			} else {
				_, err = tx.ExecContext(ctx, `INSERT INTO config_items (ns_id, item_key, value, secret, comment, position, updated_by, updated_at) VALUES (?, ?, ?, ?, ?, 0, ?, ?)`,
					ns.ID, it.Key, stored, b2i(it.Secret), it.Comment, actor, now)
			}
			if err != nil {
				return fmt.Errorf("config: write item %q: %w", it.Key, err)
			}
			after = append(after, config.Change{Key: it.Key, New: maskIf(it.Value, it.Secret)})
		}
		dels := e.Delete
		if e.Replace {
			for k := range old {
				if !keep[k] {
					dels = append(dels, k)
				}
			}
		}
		for _, k := range dels {
			prev, had := old[k]
			if !had {
				if e.Replace {
					continue
				}
				return fmt.Errorf("%w: key %q in the draft of %s", config.ErrNotFound, k, c)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM config_items WHERE ns_id = ? AND item_key = ?`, ns.ID, k); err != nil {
				return fmt.Errorf("config: delete item %q: %w", k, err)
			}
			before = append(before, config.Change{Key: k, Old: maskIf(prev.Value, prev.Secret)})
			after = append(after, config.Change{Key: k, Op: "deleted"})
		}
		version = ns.DraftVersion
		if len(after) == 0 {
			return nil // nothing changed; no new version, no audit noise
		}
		res, err := tx.ExecContext(ctx, `UPDATE config_namespaces SET draft_version = draft_version + 1, last_editor = ? WHERE id = ? AND draft_version = ?`, actor, ns.ID, ns.DraftVersion)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			cur, _ := s.loadNS(ctx, tx, c)
			if cur != nil {
				return &config.ConflictError{Current: cur.DraftVersion, Given: ns.DraftVersion}
			}
			return config.ErrConflict
		}
		version = ns.DraftVersion + 1
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.item.edit", Resource: "config/" + c.String(), Before: audit.Value(before), After: audit.Value(after)})
	})
	return version, err
}

func maskIf(v string, secret bool) string {
	if secret {
		return config.Masked
	}
	return v
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func validUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func decodeSnapshot(raw string) (config.Snapshot, error) {
	var s config.Snapshot
	if raw == "" {
		return s, nil
	}
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, fmt.Errorf("config: corrupt snapshot: %w", err)
	}
	return s, nil
}

func encodeSnapshot(s config.Snapshot) string {
	sort.Slice(s, func(i, j int) bool { return s[i].Key < s[j].Key })
	if s == nil {
		s = config.Snapshot{}
	}
	b, _ := json.Marshal(s)
	return string(b)
}

func snapshotOf(items []config.Item) config.Snapshot {
	out := make(config.Snapshot, 0, len(items))
	for _, it := range items {
		out = append(out, config.SnapItem{Key: it.Key, Value: it.Value, Secret: it.Secret})
	}
	return out.Sorted()
}
