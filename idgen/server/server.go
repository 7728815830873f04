// Package server is the id component of tangram server: Leaf's segment
// mode on the platform's SQL store (one row per tag; a range is taken by
// one UPDATE of its max_id, so any number of servers on one database hand
// out disjoint ranges), IDs served from the server's own double buffers,
// and worker numbers leased to snowflake generators with a fencing term,
// expiry and the earliest time the next holder may issue from — numbers
// are recycled after expiry, never while a holder may still be issuing.
package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/idgen"
	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/internal/store"
)

// ErrClosed is returned after Close.
var ErrClosed = errcode.New(errcode.Unavailable, "idgen/server: closed")

// Config configures the id component.
type Config struct {
	// Store holds tags and worker leases (required).
	Store *store.Store
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// AutoCreate creates a tag on first use with DefaultStep, starting at
	// 1 (default true through DefaultConfig; set NoAutoCreate to refuse
	// unknown tags).
	NoAutoCreate bool
	// DefaultStep of a tag created on first use (default 1,000).
	DefaultStep int64
	// MaxStep caps the range a client may ask for (default 10,000,000).
	MaxStep int64
	// MinTTL and MaxTTL bound a worker lease's TTL (300 ms and 10 min).
	MinTTL, MaxTTL time.Duration
}

// DefaultConfig returns the defaults (Store still needed).
func DefaultConfig() Config {
	return Config{DefaultStep: 1000, MaxStep: 10_000_000, MinTTL: 300 * time.Millisecond, MaxTTL: 10 * time.Minute}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DefaultStep <= 0 {
		c.DefaultStep = d.DefaultStep
	}
	if c.MaxStep <= 0 {
		c.MaxStep = d.MaxStep
	}
	if c.MinTTL <= 0 {
		c.MinTTL = d.MinTTL
	}
	if c.MaxTTL <= 0 {
		c.MaxTTL = d.MaxTTL
	}
	return c
}

// Validate checks c; it changes nothing.
func (c Config) Validate() error {
	if c.Store == nil {
		return errors.New("idgen/server: Config.Store is required")
	}
	if c.DefaultStep > 0 && c.MaxStep > 0 && c.DefaultStep > c.MaxStep {
		return fmt.Errorf("idgen/server: DefaultStep %d above MaxStep %d", c.DefaultStep, c.MaxStep)
	}
	if c.MinTTL > 0 && c.MaxTTL > 0 && c.MinTTL > c.MaxTTL {
		return fmt.Errorf("idgen/server: MinTTL %v above MaxTTL %v", c.MinTTL, c.MaxTTL)
	}
	return nil
}

// Server is the id component.
type Server struct {
	cfg  Config
	st   *store.Store
	log  *slog.Logger
	segs *idgen.Segments

	mu      sync.Mutex
	started bool
	closed  bool
}

// New returns an unstarted Server.
func New(cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, st: cfg.Store, log: cfg.Logger}
	segs, err := idgen.NewSegments(idgen.SegmentConfig{Source: s.Segment, Logger: cfg.Logger, MaxStep: cfg.MaxStep})
	if err != nil {
		return nil, err
	}
	s.segs = segs
	return s, nil
}

// Start has nothing to prepare: ranges are taken on first use.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.started {
		return ErrClosed
	}
	s.started = true
	return nil
}

// Shutdown stops; the rest of the server's ranges is skipped, as after
// any restart.
func (s *Server) Shutdown(ctx context.Context) error { return s.Close() }

// Close stops the background range fetches.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return s.segs.Close()
}

// Segment hands out the next range of tag: step is what the caller would
// like, kept within [the tag's step, MaxStep].
func (s *Server) Segment(ctx context.Context, tag string, step int64) (idgen.Segment, error) {
	if err := idgen.ValidName("tag", tag); err != nil {
		return idgen.Segment{}, err
	}
	if step < 0 {
		return idgen.Segment{}, errcode.New(errcode.BadRequest, fmt.Sprintf("idgen: step %d: want 0 (the tag's) or more", step))
	}
	want := min(step, s.cfg.MaxStep)
	for attempt := 0; ; attempt++ {
		var sg idgen.Segment
		found := true
		err := s.st.InTx(ctx, func(tx *store.Tx) error {
			res, err := tx.ExecContext(ctx, `UPDATE id_segments SET max_id = max_id + (CASE WHEN step > ? THEN step ELSE ? END), updated_at = ? WHERE tag = ?`,
				want, want, store.NowMillis(), tag)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				found = false
				return nil
			}
			var maxID, tagStep int64
			if err := tx.QueryRowContext(ctx, `SELECT max_id, step FROM id_segments WHERE tag = ?`, tag).Scan(&maxID, &tagStep); err != nil {
				return err
			}
			inc := max(tagStep, want)
			sg = idgen.Segment{Tag: tag, Start: maxID - inc, End: maxID, Step: tagStep}
			return nil
		})
		if err != nil {
			return idgen.Segment{}, fmt.Errorf("idgen/server: take a range of %s: %w", tag, err)
		}
		if found {
			return sg, nil
		}
		if s.cfg.NoAutoCreate || attempt > 0 {
			return idgen.Segment{}, fmt.Errorf("%w: %s", idgen.ErrNoTag, tag)
		}
		if _, err := s.CreateTag(ctx, idgen.TagRequest{Tag: tag}); err != nil && !errors.Is(err, errTagExists) {
			return idgen.Segment{}, err
		}
	}
}

var errTagExists = errcode.New(errcode.AlreadyExists, "idgen: tag exists")

// CreateTag creates a tag starting at req.Start (default 1) with req.Step
// (default DefaultStep); for an existing tag it sets the step and
// description (a range already handed out is not changed).
func (s *Server) CreateTag(ctx context.Context, req idgen.TagRequest) (idgen.Tag, error) {
	if err := idgen.ValidName("tag", req.Tag); err != nil {
		return idgen.Tag{}, err
	}
	if req.Step < 0 || req.Step > s.cfg.MaxStep {
		return idgen.Tag{}, errcode.New(errcode.BadRequest, fmt.Sprintf("idgen: step %d: want 1–%d", req.Step, s.cfg.MaxStep))
	}
	if req.Start < 0 {
		return idgen.Tag{}, errcode.New(errcode.BadRequest, fmt.Sprintf("idgen: start %d: want 0 or more", req.Start))
	}
	if len(req.Description) > 1024 {
		return idgen.Tag{}, errcode.New(errcode.BadRequest, "idgen: description over 1 KiB")
	}
	step, start := req.Step, req.Start
	if step == 0 {
		step = s.cfg.DefaultStep
	}
	if start == 0 {
		start = 1
	}
	now := store.NowMillis()
	_, err := s.st.ExecContext(ctx, `INSERT INTO id_segments (tag, max_id, step, description, updated_at) VALUES (?, ?, ?, ?, ?)`,
		req.Tag, start, step, req.Description, now)
	if store.IsUniqueViolation(err) {
		if req.Step == 0 && req.Description == "" {
			return idgen.Tag{}, fmt.Errorf("%w: %s", errTagExists, req.Tag)
		}
		_, err = s.st.ExecContext(ctx, `UPDATE id_segments SET step = ?, description = ? WHERE tag = ?`, step, req.Description, req.Tag)
	}
	if err != nil {
		return idgen.Tag{}, fmt.Errorf("idgen/server: create tag %s: %w", req.Tag, err)
	}
	return s.Tag(ctx, req.Tag)
}

// Tag returns one tag's row.
func (s *Server) Tag(ctx context.Context, tag string) (idgen.Tag, error) {
	var t idgen.Tag
	err := s.st.QueryRowContext(ctx, `SELECT tag, max_id, step, description, updated_at FROM id_segments WHERE tag = ?`, tag).
		Scan(&t.Tag, &t.MaxID, &t.Step, &t.Description, &t.UpdatedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return idgen.Tag{}, fmt.Errorf("%w: %s", idgen.ErrNoTag, tag)
	}
	if err != nil {
		return idgen.Tag{}, fmt.Errorf("idgen/server: read tag %s: %w", tag, err)
	}
	return t, nil
}

// Tags lists every tag.
func (s *Server) Tags(ctx context.Context) ([]idgen.Tag, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT tag, max_id, step, description, updated_at FROM id_segments ORDER BY tag`)
	if err != nil {
		return nil, fmt.Errorf("idgen/server: list tags: %w", err)
	}
	defer rows.Close()
	var out []idgen.Tag
	for rows.Next() {
		var t idgen.Tag
		if err := rows.Scan(&t.Tag, &t.MaxID, &t.Step, &t.Description, &t.UpdatedAt); err != nil {
			return nil, fmt.Errorf("idgen/server: list tags: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Next hands out count IDs of tag from the server's own buffers.
func (s *Server) Next(ctx context.Context, tag string, count int) ([]int64, error) {
	if err := idgen.ValidName("tag", tag); err != nil {
		return nil, err
	}
	if count == 0 {
		count = 1
	}
	if count < 0 || count > 10_000 {
		return nil, errcode.New(errcode.BadRequest, fmt.Sprintf("idgen: count %d: want 1–10000", count))
	}
	a := s.segs.Alloc(tag)
	out := make([]int64, 0, count)
	for range count {
		id, err := a.Next(ctx)
		if err != nil {
			if errors.Is(err, idgen.ErrSegmentsClosed) {
				return nil, ErrClosed
			}
			return nil, err
		}
		out = append(out, id)
	}
	return out, nil
}

// Buffers reports the server's own buffers per tag.
func (s *Server) Buffers() []idgen.State {
	st := s.segs.States()
	slices.SortFunc(st, func(a, b idgen.State) int {
		if a.Tag < b.Tag {
			return -1
		}
		if a.Tag > b.Tag {
			return 1
		}
		return 0
	})
	return st
}
