package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/tangram-dev/tangram/job"

	"github.com/tangram-dev/tangram/internal/store"
)

// SaveGlue stores a new version of a glue job's source and makes it
// current.
func (s *Scheduler) SaveGlue(ctx context.Context, jobID int64, source, note, author string) (*job.GlueVersion, error) {
	j, err := s.Get(ctx, jobID)
	if err != nil {
		return nil, err
	}
	if job.GlueType(j.Handler) == "" {
		return nil, fmt.Errorf("%w handler: job %s is not a glue job (handler glue:shell, glue:python3 or glue:go)", job.ErrInvalid, j.Name)
	}
	if len(source) > job.MaxGlueBytes {
		return nil, fmt.Errorf("%w source: %d bytes, at most %d", job.ErrInvalid, len(source), job.MaxGlueBytes)
	}
	if len(note) > 1024 {
		return nil, fmt.Errorf("%w note: at most 1024 bytes", job.ErrInvalid)
	}
	v := &job.GlueVersion{JobID: jobID, Source: source, Note: note, Author: author, CreatedAt: time.Now().UTC()}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		var cur sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM job_glue WHERE job_id = ?`, jobID).Scan(&cur); err != nil {
			return fmt.Errorf("job: glue versions of %d: %w", jobID, err)
		}
		v.Version = int(cur.Int64) + 1
		_, err := tx.ExecContext(ctx, `INSERT INTO job_glue (job_id, version, source, note, author, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			jobID, v.Version, source, note, author, ms(v.CreatedAt))
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("%w: another save of job %d's glue at the same moment; save again", job.ErrInvalid, jobID)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Glue returns a version of a job's glue (0: the current one).
func (s *Scheduler) Glue(ctx context.Context, jobID int64, version int) (*job.GlueVersion, error) {
	q := `SELECT version, source, note, author, created_at FROM job_glue WHERE job_id = ? ORDER BY version DESC LIMIT 1`
	args := []any{jobID}
	if version > 0 {
		q = `SELECT version, source, note, author, created_at FROM job_glue WHERE job_id = ? AND version = ?`
		args = append(args, version)
	}
	v := &job.GlueVersion{JobID: jobID}
	var at int64
	err := s.st.QueryRowContext(ctx, q, args...).Scan(&v.Version, &v.Source, &v.Note, &v.Author, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: glue version %d of job %d", job.ErrNotFound, version, jobID)
	}
	if err != nil {
		return nil, fmt.Errorf("job: glue of %d: %w", jobID, err)
	}
	v.CreatedAt = fromMS(at)
	return v, nil
}

// GlueHistory lists a job's glue versions, newest first, without sources.
func (s *Scheduler) GlueHistory(ctx context.Context, jobID int64) ([]job.GlueVersion, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT version, note, author, created_at FROM job_glue WHERE job_id = ? ORDER BY version DESC`, jobID)
	if err != nil {
		return nil, fmt.Errorf("job: glue history of %d: %w", jobID, err)
	}
	defer rows.Close()
	var out []job.GlueVersion
	for rows.Next() {
		v := job.GlueVersion{JobID: jobID}
		var at int64
		if err := rows.Scan(&v.Version, &v.Note, &v.Author, &at); err != nil {
			return nil, err
		}
		v.CreatedAt = fromMS(at)
		out = append(out, v)
	}
	return out, rows.Err()
}

// RollbackGlue makes an old version current again, as a new version (the
// history keeps everything).
func (s *Scheduler) RollbackGlue(ctx context.Context, jobID int64, version int, author string) (*job.GlueVersion, error) {
	old, err := s.Glue(ctx, jobID, version)
	if err != nil {
		return nil, err
	}
	return s.SaveGlue(ctx, jobID, old.Source, fmt.Sprintf("rollback to version %d", version), author)
}

// DiffGlue returns a unified diff between two versions.
func (s *Scheduler) DiffGlue(ctx context.Context, jobID int64, from, to int) (string, error) {
	a, err := s.Glue(ctx, jobID, from)
	if err != nil {
		return "", err
	}
	b, err := s.Glue(ctx, jobID, to)
	if err != nil {
		return "", err
	}
	return job.Diff(fmt.Sprintf("version %d", a.Version), fmt.Sprintf("version %d", b.Version), a.Source, b.Source), nil
}
