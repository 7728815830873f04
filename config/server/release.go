package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/tangram-dev/tangram/config"

	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/store"
)

const relCols = `id, ns_id, version, kind, comment, author, snapshot, base_release_id, created_at`

func scanRelease(sc interface{ Scan(...any) error }) (*config.Release, error) {
	var r config.Release
	var snap string
	if err := sc.Scan(&r.ID, &r.NSID, &r.Version, &r.Kind, &r.Comment, &r.Author, &snap, &r.BaseID, &r.CreatedAt); err != nil {
		return nil, err
	}
	var err error
	r.Snapshot, err = decodeSnapshot(snap)
	return &r, err
}

func (s *Server) release(ctx context.Context, q store.Querier, id int64) (*config.Release, error) {
	r, err := scanRelease(q.QueryRowContext(ctx, `SELECT `+relCols+` FROM config_releases WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: release %d", config.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("config: load release %d: %w", id, err)
	}
	return r, nil
}

func (s *Server) currentSnapshot(ctx context.Context, q store.Querier, ns *config.Namespace) (config.Snapshot, error) {
	if ns.ReleaseID == 0 {
		return config.Snapshot{}, nil
	}
	r, err := s.release(ctx, q, ns.ReleaseID)
	if err != nil {
		return nil, err
	}
	return r.Snapshot, nil
}

// insertRelease writes a release, points the namespace at it (unless gray)
// and writes release messages; all inside tx.
func (s *Server) insertRelease(ctx context.Context, tx *store.Tx, ns *config.Namespace, kind, comment, author string, snap config.Snapshot, base int64) (*config.Release, []notice, error) {
	var maxV sql.NullInt64
	if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM config_releases WHERE ns_id = ?`, ns.ID).Scan(&maxV); err != nil {
		return nil, nil, err
	}
	r := &config.Release{NSID: ns.ID, Version: maxV.Int64 + 1, Kind: kind, Comment: comment, Author: author, BaseID: base, CreatedAt: store.NowMillis(), Snapshot: snap.Sorted()}
	id, err := tx.InsertID(ctx, `INSERT INTO config_releases (ns_id, version, kind, comment, author, snapshot, base_release_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		r.NSID, r.Version, r.Kind, r.Comment, r.Author, encodeSnapshot(r.Snapshot), r.BaseID, r.CreatedAt)
	if store.IsUniqueViolation(err) {
		return nil, nil, fmt.Errorf("%w: another release of %s was published at the same moment; retry", config.ErrConflict, ns.Coord)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("config: insert release: %w", err)
	}
	r.ID = id
	if kind != config.KindGray {
		if _, err := tx.ExecContext(ctx, `UPDATE config_namespaces SET release_id = ? WHERE id = ?`, id, ns.ID); err != nil {
			return nil, nil, err
		}
	}
	notes, err := s.writeMessages(ctx, tx, ns)
	if len(notes) > 0 {
		notes[0].kind = kind // counted by notify once the transaction has committed
	}
	return r, notes, err
}

// Publish releases a namespace's draft as a new immutable release.
func (s *Server) Publish(ctx context.Context, actor string, c config.Coord, req config.PublishRequest) (*config.Release, error) {
	var rel *config.Release
	var notes []notice
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, err := s.loadNS(ctx, tx, c)
		if err != nil {
			return err
		}
		if req.Version != nil && *req.Version != ns.DraftVersion {
			return &config.ConflictError{Current: ns.DraftVersion, Given: *req.Version}
		}
		kind := config.KindNormal
		if req.Emergency {
			kind = config.KindEmergency
		}
		if err := s.releaseGate(ctx, tx, ns, req.Emergency, "an approved release request (or an emergency publish)"); err != nil {
			return err
		}
		if ns.SeparatePublisher && ns.LastEditor == actor && !req.Emergency {
			return fmt.Errorf("%w: %s requires the publisher to differ from the last editor (%s)", config.ErrForbidden, c, actor)
		}
		snap, prev, err := s.draftForRelease(ctx, tx, ns)
		if err != nil {
			return err
		}
		rel, notes, err = s.insertRelease(ctx, tx, ns, kind, req.Comment, actor, snap, ns.ReleaseID)
		if err != nil {
			return err
		}
		rel.Changes = config.Diff(prev, snap)
		action := "config.publish"
		if req.Emergency {
			action = "config.publish.emergency"
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: action, Resource: "config/" + c.String(),
			Before: "release " + strconv.FormatInt(ns.ReleaseID, 10), After: audit.Value(map[string]any{"release": rel.ID, "version": rel.Version, "comment": req.Comment, "changes": rel.Changes})})
	})
	if err != nil {
		return nil, err
	}
	s.notify(notes)
	return rel, nil
}

// draftForRelease returns the namespace's draft as a validated snapshot,
// and the snapshot of its current release.
func (s *Server) draftForRelease(ctx context.Context, tx *store.Tx, ns *config.Namespace) (draft, current config.Snapshot, err error) {
	items, err := s.items(ctx, tx, ns.ID)
	if err != nil {
		return nil, nil, err
	}
	draft = snapshotOf(items)
	if err := s.validateSnapshot(ns, draft); err != nil {
		return nil, nil, err
	}
	current, err = s.currentSnapshot(ctx, tx, ns)
	return draft, current, err
}

// releaseGate applies a namespace's release rules to a direct release: a
// namespace that requires approval refuses it unless it is an emergency
// publish, which the environment must allow.
func (s *Server) releaseGate(ctx context.Context, tx *store.Tx, ns *config.Namespace, emergency bool, instead string) error {
	if emergency {
		env, err := s.getEnv(ctx, tx, ns.Env)
		if err != nil {
			return err
		}
		if !env.EmergencyPublish {
			return fmt.Errorf("%w: emergency publish is switched off in environment %q", config.ErrForbidden, ns.Env)
		}
		return nil
	}
	if ns.RequireApproval {
		return fmt.Errorf("%w: %s requires %s", config.ErrApprovalRequired, ns.Coord, instead)
	}
	return nil
}

// validateSnapshot checks documents of yaml/json namespaces, naming the line.
func (s *Server) validateSnapshot(ns *config.Namespace, snap config.Snapshot) error {
	if ns.Format == config.Properties || ns.Format == config.Text {
		return nil
	}
	it, ok := snap.Get(config.ContentKey)
	if !ok {
		return nil
	}
	v := it.Value
	if it.Secret {
		plain, err := s.cipher.Open(v)
		if err != nil {
			return err
		}
		v = plain
	}
	if err := config.Validate(ns.Format, v); err != nil {
		return fmt.Errorf("%s: %w", ns.Coord, err)
	}
	return nil
}

// Releases lists a namespace's releases newest first (including gray ones).
func (s *Server) Releases(ctx context.Context, c config.Coord, before int64, limit int) ([]config.Release, error) {
	ns, err := s.Namespace(ctx, c)
	if err != nil {
		return nil, err
	}
	if limit <= 0 || limit > 500 {
		limit = 50
	}
	q := `SELECT ` + relCols + ` FROM config_releases WHERE ns_id = ?`
	args := []any{ns.ID}
	if before > 0 {
		q += ` AND id < ?`
		args = append(args, before)
	}
	rows, err := s.st.QueryContext(ctx, q+` ORDER BY id DESC LIMIT `+strconv.Itoa(limit+1), args...)
	if err != nil {
		return nil, fmt.Errorf("config: list releases: %w", err)
	}
	var out []*config.Release
	for rows.Next() {
		r, err := scanRelease(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) > limit {
		out = out[:limit]
	}
	res := make([]config.Release, 0, len(out))
	for i, r := range out {
		prev, err := s.replaced(ctx, r, out[i+1:])
		if err != nil {
			return nil, err
		}
		r.Changes = config.Diff(prev, r.Snapshot)
		res = append(res, *r)
	}
	return res, nil
}

// replaced returns the snapshot r changed: for a main release, the main
// release before it (which was current until r); for a gray release, the
// main release it was published over. older holds releases listed after r
// (lower ids), looked at before the store.
func (s *Server) replaced(ctx context.Context, r *config.Release, older []*config.Release) (config.Snapshot, error) {
	if r.Kind == config.KindGray {
		for _, o := range older {
			if o.ID == r.BaseID {
				return o.Snapshot, nil
			}
		}
		if r.BaseID == 0 {
			return nil, nil
		}
		b, err := s.release(ctx, s.st, r.BaseID)
		if err != nil {
			return nil, err
		}
		return b.Snapshot, nil
	}
	for _, o := range older {
		if o.Kind != config.KindGray {
			return o.Snapshot, nil
		}
	}
	p, err := scanRelease(s.st.QueryRowContext(ctx, `SELECT `+relCols+` FROM config_releases WHERE ns_id = ? AND version < ? AND kind <> ? ORDER BY version DESC LIMIT 1`,
		r.NSID, r.Version, config.KindGray))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return p.Snapshot, nil
}

// Release loads one release of a namespace with masked items.
func (s *Server) Release(ctx context.Context, c config.Coord, id int64) (*config.Release, error) {
	ns, err := s.Namespace(ctx, c)
	if err != nil {
		return nil, err
	}
	r, err := s.release(ctx, s.st, id)
	if err != nil {
		return nil, err
	}
	if r.NSID != ns.ID {
		return nil, fmt.Errorf("%w: release %d of %s", config.ErrNotFound, id, c)
	}
	r.Items = s.masked(r.Snapshot)
	return r, nil
}

func (s *Server) masked(snap config.Snapshot) []config.SnapItem {
	out := make([]config.SnapItem, len(snap))
	for i, it := range snap {
		out[i] = it
		if it.Secret {
			out[i].Value = config.Masked
		}
	}
	return out
}

// DiffReleases compares two releases of a namespace; to == 0 means the
// current draft, from == 0 the current release.
func (s *Server) DiffReleases(ctx context.Context, c config.Coord, from, to int64) ([]config.Change, error) {
	ns, err := s.Namespace(ctx, c)
	if err != nil {
		return nil, err
	}
	load := func(id int64, draft bool) (config.Snapshot, error) {
		if id == 0 && draft {
			items, err := s.items(ctx, s.st, ns.ID)
			return snapshotOf(items), err
		}
		if id == 0 {
			return s.currentSnapshot(ctx, s.st, ns)
		}
		r, err := s.release(ctx, s.st, id)
		if err != nil {
			return nil, err
		}
		if r.NSID != ns.ID {
			return nil, fmt.Errorf("%w: release %d of %s", config.ErrNotFound, id, c)
		}
		return r.Snapshot, nil
	}
	a, err := load(from, false)
	if err != nil {
		return nil, err
	}
	b, err := load(to, true)
	if err != nil {
		return nil, err
	}
	return config.Diff(a, b), nil
}

// Rollback publishes an earlier release's snapshot again as a new release
// (history is never rewritten) and resets the draft to it, so that the next
// publish does not bring the rolled-back values back by surprise. With no
// target it returns to the release before the current one; rolling back
// again goes one further back.
func (s *Server) Rollback(ctx context.Context, actor string, c config.Coord, req config.RollbackRequest) (*config.Release, error) {
	var rel *config.Release
	var notes []notice
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, err := s.loadNS(ctx, tx, c)
		if err != nil {
			return err
		}
		if ns.ReleaseID == 0 {
			return fmt.Errorf("%w: %s has no release to roll back", config.ErrInvalid, c)
		}
		cur, err := s.release(ctx, tx, ns.ReleaseID)
		if err != nil {
			return err
		}
		target := req.To
		if target == 0 {
			target, err = s.logicalPrevious(ctx, tx, cur)
			if err != nil {
				return err
			}
			if target == 0 {
				return fmt.Errorf("%w: %s has no earlier release to roll back to", config.ErrInvalid, c)
			}
		}
		tr, err := s.release(ctx, tx, target)
		if err != nil {
			return err
		}
		if tr.NSID != ns.ID || tr.Kind == config.KindGray {
			return fmt.Errorf("%w: release %d is not a main release of %s", config.ErrInvalid, target, c)
		}
		comment := req.Comment
		if comment == "" {
			comment = fmt.Sprintf("rollback to version %d", tr.Version)
		}
		rel, notes, err = s.insertRelease(ctx, tx, ns, config.KindRollback, comment, actor, tr.Snapshot, tr.ID)
		if err != nil {
			return err
		}
		rel.Changes = config.Diff(cur.Snapshot, tr.Snapshot)
		if err := s.resetDraft(ctx, tx, ns, actor, tr.Snapshot); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.rollback", Resource: "config/" + c.String(),
			Before: "release " + strconv.FormatInt(cur.ID, 10), After: audit.Value(map[string]any{"release": rel.ID, "restores": tr.ID, "changes": rel.Changes})})
	})
	if err != nil {
		return nil, err
	}
	s.notify(notes)
	return rel, nil
}

// logicalPrevious is the release that r replaced: for a rollback, the one
// before the release it restored.
func (s *Server) logicalPrevious(ctx context.Context, q store.Querier, r *config.Release) (int64, error) {
	for i := 0; i < 10000; i++ {
		if r.Kind != config.KindRollback {
			return r.BaseID, nil
		}
		t, err := s.release(ctx, q, r.BaseID)
		if err != nil {
			return 0, err
		}
		r = t
	}
	return 0, fmt.Errorf("%w: rollback chain too long", config.ErrInvalid)
}

// resetDraft makes the draft items equal to snap.
func (s *Server) resetDraft(ctx context.Context, tx *store.Tx, ns *config.Namespace, actor string, snap config.Snapshot) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM config_items WHERE ns_id = ?`, ns.ID); err != nil {
		return err
	}
	now := store.NowMillis()
	for _, it := range snap {
		if _, err := tx.ExecContext(ctx, `INSERT INTO config_items (ns_id, item_key, value, secret, comment, position, updated_by, updated_at) VALUES (?, ?, ?, ?, '', 0, ?, ?)`,
			ns.ID, it.Key, it.Value, b2i(it.Secret), actor, now); err != nil {
			return err
		}
	}
	_, err := tx.ExecContext(ctx, `UPDATE config_namespaces SET draft_version = draft_version + 1 WHERE id = ?`, ns.ID)
	return err
}

// RequestRelease files a request to release the current draft; another
// user with release rights approves it.
func (s *Server) RequestRelease(ctx context.Context, actor string, c config.Coord, comment string) (*config.ReleaseRequest, error) {
	var out *config.ReleaseRequest
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, err := s.loadNS(ctx, tx, c)
		if err != nil {
			return err
		}
		snap, prev, err := s.draftForRelease(ctx, tx, ns)
		if err != nil {
			return err
		}
		changes := config.Diff(prev, snap)
		if len(changes) == 0 {
			return fmt.Errorf("%w: the draft of %s has no changes to release", config.ErrInvalid, c)
		}
		now := store.NowMillis()
		id, err := tx.InsertID(ctx, `INSERT INTO config_release_requests (ns_id, requested_by, comment, snapshot, base_release_id, status, reviewer, review_comment, created_at) VALUES (?, ?, ?, ?, ?, ?, '', '', ?)`,
			ns.ID, actor, comment, encodeSnapshot(snap), ns.ReleaseID, config.StatusPending, now)
		if err != nil {
			return err
		}
		out = &config.ReleaseRequest{ID: id, NSID: ns.ID, RequestedBy: actor, Comment: comment, BaseReleaseID: ns.ReleaseID, Status: config.StatusPending, CreatedAt: now, Changes: changes}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.request.create", Resource: "config/" + c.String(), After: audit.Value(map[string]any{"request": id, "changes": changes})})
	})
	return out, err
}

const reqCols = `id, ns_id, requested_by, comment, snapshot, base_release_id, status, reviewer, review_comment, release_id, created_at, decided_at`

func scanRequest(sc interface{ Scan(...any) error }) (*config.ReleaseRequest, error) {
	var r config.ReleaseRequest
	var snap string
	if err := sc.Scan(&r.ID, &r.NSID, &r.RequestedBy, &r.Comment, &snap, &r.BaseReleaseID, &r.Status, &r.Reviewer, &r.ReviewComment, &r.ReleaseID, &r.CreatedAt, &r.DecidedAt); err != nil {
		return nil, err
	}
	var err error
	r.Snapshot, err = decodeSnapshot(snap)
	return &r, err
}

// Requests lists a namespace's release requests, newest first.
func (s *Server) Requests(ctx context.Context, c config.Coord, status string) ([]config.ReleaseRequest, error) {
	ns, err := s.Namespace(ctx, c)
	if err != nil {
		return nil, err
	}
	q := `SELECT ` + reqCols + ` FROM config_release_requests WHERE ns_id = ?`
	args := []any{ns.ID}
	if status != "" {
		q += ` AND status = ?`
		args = append(args, status)
	}
	rows, err := s.st.QueryContext(ctx, q+` ORDER BY id DESC LIMIT 200`, args...)
	if err != nil {
		return nil, fmt.Errorf("config: list requests: %w", err)
	}
	defer rows.Close()
	var out []config.ReleaseRequest
	for rows.Next() {
		r, err := scanRequest(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i := range out {
		var base config.Snapshot
		if out[i].BaseReleaseID != 0 {
			if br, err := s.release(ctx, s.st, out[i].BaseReleaseID); err == nil {
				base = br.Snapshot
			}
		}
		out[i].Changes = config.Diff(base, out[i].Snapshot)
	}
	return out, nil
}

// Approve publishes a pending request's snapshot. The approver must not be
// the requester; the namespace must not have been released since the
// request was made (else the request is stale and must be filed again).
func (s *Server) Approve(ctx context.Context, actor string, c config.Coord, id int64, d config.Decision) (*config.Release, error) {
	var rel *config.Release
	var notes []notice
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, err := s.loadNS(ctx, tx, c)
		if err != nil {
			return err
		}
		r, err := s.pendingRequest(ctx, tx, ns, id)
		if err != nil {
			return err
		}
		if r.RequestedBy == actor {
			return fmt.Errorf("%w: %s cannot approve their own request %d", config.ErrForbidden, actor, id)
		}
		if r.BaseReleaseID != ns.ReleaseID {
			return fmt.Errorf("%w: %s was released since request %d was made; file a new request", config.ErrConflict, c, id)
		}
		prev, err := s.currentSnapshot(ctx, tx, ns)
		if err != nil {
			return err
		}
		comment := r.Comment
		if comment == "" {
			comment = fmt.Sprintf("request %d", id)
		}
		rel, notes, err = s.insertRelease(ctx, tx, ns, config.KindApproved, comment, r.RequestedBy, r.Snapshot, ns.ReleaseID)
		if err != nil {
			return err
		}
		rel.Changes = config.Diff(prev, r.Snapshot)
		if _, err := tx.ExecContext(ctx, `UPDATE config_release_requests SET status = ?, reviewer = ?, review_comment = ?, release_id = ?, decided_at = ? WHERE id = ?`,
			config.StatusApproved, actor, d.Comment, rel.ID, store.NowMillis(), id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.request.approve", Resource: "config/" + c.String(),
			After: audit.Value(map[string]any{"request": id, "requested_by": r.RequestedBy, "release": rel.ID, "changes": rel.Changes})})
	})
	if err != nil {
		return nil, err
	}
	s.notify(notes)
	return rel, nil
}

// Decline rejects (by a reviewer) or cancels (by the requester) a request.
func (s *Server) Decline(ctx context.Context, actor string, c config.Coord, id int64, status string, d config.Decision) error {
	if status != config.StatusRejected && status != config.StatusCancelled {
		return fmt.Errorf("%w: status %q", config.ErrInvalid, status)
	}
	return s.st.InTx(ctx, func(tx *store.Tx) error {
		ns, err := s.loadNS(ctx, tx, c)
		if err != nil {
			return err
		}
		r, err := s.pendingRequest(ctx, tx, ns, id)
		if err != nil {
			return err
		}
		if status == config.StatusCancelled && r.RequestedBy != actor {
			return fmt.Errorf("%w: only %s can cancel request %d", config.ErrForbidden, r.RequestedBy, id)
		}
		if status == config.StatusRejected && r.RequestedBy == actor {
			return fmt.Errorf("%w: cancel your own request instead of rejecting it", config.ErrForbidden)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE config_release_requests SET status = ?, reviewer = ?, review_comment = ?, decided_at = ? WHERE id = ?`,
			status, actor, d.Comment, store.NowMillis(), id); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "config.request." + status, Resource: "config/" + c.String(), After: audit.Value(map[string]any{"request": id, "comment": d.Comment})})
	})
}

func (s *Server) pendingRequest(ctx context.Context, tx *store.Tx, ns *config.Namespace, id int64) (*config.ReleaseRequest, error) {
	r, err := scanRequest(tx.QueryRowContext(ctx, `SELECT `+reqCols+` FROM config_release_requests WHERE id = ? AND ns_id = ?`, id, ns.ID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: release request %d of %s", config.ErrNotFound, id, ns.Coord)
	}
	if err != nil {
		return nil, err
	}
	if r.Status != config.StatusPending {
		return nil, fmt.Errorf("%w: request %d is already %s", config.ErrConflict, id, r.Status)
	}
	return r, nil
}
