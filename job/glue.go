package job

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/store"
)

// Glue jobs carry their code: a job whose handler is "glue:shell",
// "glue:python3" or "glue:go" runs the job's current glue source on an
// executor that opted in to that type — no deploy. Every saved source is a
// new version; old ones stay (history, diff, rollback).
const (
	GlueShell  = "shell"
	GluePython = "python3"
	GlueGo     = "go"
)

// MaxGlueBytes bounds a glue source.
const MaxGlueBytes = 256 << 10

// GlueType returns the glue type of a handler name ("" when not glue).
func GlueType(handler string) string {
	t, ok := strings.CutPrefix(handler, "glue:")
	if !ok {
		return ""
	}
	return t
}

func validGlue(t string) bool { return t == GlueShell || t == GluePython || t == GlueGo }

// GlueVersion is one saved source of a glue job.
type GlueVersion struct {
	JobID     int64     `json:"job_id"`
	Version   int       `json:"version"`
	Source    string    `json:"source,omitempty"`
	Note      string    `json:"note,omitempty"`
	Author    string    `json:"author"`
	CreatedAt time.Time `json:"created_at"`
}

// SaveGlue stores a new version of a glue job's source and makes it
// current.
func (s *Scheduler) SaveGlue(ctx context.Context, jobID int64, source, note, author string) (*GlueVersion, error) {
	j, err := s.Get(ctx, jobID)
	if err != nil {
		return nil, err
	}
	if GlueType(j.Handler) == "" {
		return nil, fmt.Errorf("%w handler: job %s is not a glue job (handler glue:shell, glue:python3 or glue:go)", ErrInvalid, j.Name)
	}
	if len(source) > MaxGlueBytes {
		return nil, fmt.Errorf("%w source: %d bytes, at most %d", ErrInvalid, len(source), MaxGlueBytes)
	}
	if len(note) > 1024 {
		return nil, fmt.Errorf("%w note: at most 1024 bytes", ErrInvalid)
	}
	v := &GlueVersion{JobID: jobID, Source: source, Note: note, Author: author, CreatedAt: time.Now().UTC()}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		var cur sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(version) FROM job_glue WHERE job_id = ?`, jobID).Scan(&cur); err != nil {
			return fmt.Errorf("job: glue versions of %d: %w", jobID, err)
		}
		v.Version = int(cur.Int64) + 1
		_, err := tx.ExecContext(ctx, `INSERT INTO job_glue (job_id, version, source, note, author, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			jobID, v.Version, source, note, author, ms(v.CreatedAt))
		if store.IsUniqueViolation(err) {
			return fmt.Errorf("%w: another save of job %d's glue at the same moment; save again", ErrInvalid, jobID)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// Glue returns a version of a job's glue (0: the current one).
func (s *Scheduler) Glue(ctx context.Context, jobID int64, version int) (*GlueVersion, error) {
	q := `SELECT version, source, note, author, created_at FROM job_glue WHERE job_id = ? ORDER BY version DESC LIMIT 1`
	args := []any{jobID}
	if version > 0 {
		q = `SELECT version, source, note, author, created_at FROM job_glue WHERE job_id = ? AND version = ?`
		args = append(args, version)
	}
	v := &GlueVersion{JobID: jobID}
	var at int64
	err := s.st.QueryRowContext(ctx, q, args...).Scan(&v.Version, &v.Source, &v.Note, &v.Author, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: glue version %d of job %d", ErrNotFound, version, jobID)
	}
	if err != nil {
		return nil, fmt.Errorf("job: glue of %d: %w", jobID, err)
	}
	v.CreatedAt = fromMS(at)
	return v, nil
}

// GlueHistory lists a job's glue versions, newest first, without sources.
func (s *Scheduler) GlueHistory(ctx context.Context, jobID int64) ([]GlueVersion, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT version, note, author, created_at FROM job_glue WHERE job_id = ? ORDER BY version DESC`, jobID)
	if err != nil {
		return nil, fmt.Errorf("job: glue history of %d: %w", jobID, err)
	}
	defer rows.Close()
	var out []GlueVersion
	for rows.Next() {
		v := GlueVersion{JobID: jobID}
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
func (s *Scheduler) RollbackGlue(ctx context.Context, jobID int64, version int, author string) (*GlueVersion, error) {
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
	return Diff(fmt.Sprintf("version %d", a.Version), fmt.Sprintf("version %d", b.Version), a.Source, b.Source), nil
}

// Diff is a line diff of a and b in unified form (whole-file hunk: glue
// sources are small), from a longest common subsequence.
func Diff(nameA, nameB, a, b string) string {
	x, y := splitLines(a), splitLines(b)
	if len(x)*len(y) > 25_000_000 {
		return fmt.Sprintf("--- %s\n+++ %s\n(too large to diff: %d and %d lines)\n", nameA, nameB, len(x), len(y))
	}
	// lcs[i][j] = LCS length of x[i:], y[j:]
	lcs := make([][]int32, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n@@ -1,%d +1,%d @@\n", nameA, nameB, len(x), len(y))
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			out.WriteString(" " + x[i] + "\n")
			i++
			j++
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			out.WriteString("+" + y[j] + "\n")
			j++
		default:
			out.WriteString("-" + x[i] + "\n")
			i++
		}
	}
	return out.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}
