// Package audit records every mutation made through Tangram's APIs: who did
// what to which resource, when, from where, and the value before and after.
// Entries are written in the same SQL transaction as the change they
// describe, so a change and its audit entry land together or not at all.
// Callers mask secrets before handing values over.
package audit

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/tangram-dev/tangram/internal/store"
)

// Entry is one audit record.
type Entry struct {
	ID       int64  `json:"id"`
	At       int64  `json:"at"` // Unix milliseconds
	Actor    string `json:"actor"`
	Action   string `json:"action"`
	Resource string `json:"resource"`
	Before   string `json:"before,omitempty"`
	After    string `json:"after,omitempty"`
	Remote   string `json:"remote,omitempty"`
}

// Value renders a before/after value for an entry: strings as they are,
// anything else as JSON.
func Value(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}

type remoteKey struct{}

// WithRemote returns ctx naming the address a request came from; entries
// recorded under it carry that address unless they name their own.
func WithRemote(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, remoteKey{}, addr)
}

// Remote returns the address WithRemote put in ctx, or "".
func Remote(ctx context.Context) string {
	s, _ := ctx.Value(remoteKey{}).(string)
	return s
}

// Record writes e through q (a store or a transaction).
func Record(ctx context.Context, q store.Querier, e Entry) error {
	if e.At == 0 {
		e.At = store.NowMillis()
	}
	if e.Remote == "" {
		e.Remote = Remote(ctx)
	}
	_, err := q.ExecContext(ctx, `INSERT INTO audit_log (at, actor, action, resource, before_value, after_value, remote) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		e.At, e.Actor, e.Action, e.Resource, e.Before, e.After, e.Remote)
	if err != nil {
		return fmt.Errorf("audit: record %s: %w", e.Action, err)
	}
	return nil
}

// Filter selects entries for List. Empty fields match everything.
type Filter struct {
	Actor          string
	ActionPrefix   string
	ResourcePrefix string
	// Before returns entries with id < Before (0: newest first from the top).
	Before int64
	Limit  int
	// Since and Until bound the entries' time (unix ms; 0: unbounded):
	// Since ≤ at < Until.
	Since, Until int64
}

// List returns entries newest first.
func List(ctx context.Context, q store.Querier, f Filter) ([]Entry, error) {
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 100
	}
	query := `SELECT id, at, actor, action, resource, before_value, after_value, remote FROM audit_log WHERE 1=1`
	var args []any
	if f.Actor != "" {
		query += ` AND actor = ?`
		args = append(args, f.Actor)
	}
	if f.ActionPrefix != "" {
		query += ` AND action LIKE ?`
		args = append(args, likePrefix(f.ActionPrefix))
	}
	if f.ResourcePrefix != "" {
		query += ` AND resource LIKE ?`
		args = append(args, likePrefix(f.ResourcePrefix))
	}
	if f.Before > 0 {
		query += ` AND id < ?`
		args = append(args, f.Before)
	}
	if f.Since > 0 {
		query += ` AND at >= ?`
		args = append(args, f.Since)
	}
	if f.Until > 0 {
		query += ` AND at < ?`
		args = append(args, f.Until)
	}
	query += fmt.Sprintf(` ORDER BY id DESC LIMIT %d`, f.Limit)
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	defer rows.Close()
	var out []Entry
	for rows.Next() {
		var e Entry
		if err := rows.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Resource, &e.Before, &e.After, &e.Remote); err != nil {
			return nil, fmt.Errorf("audit: list: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func likePrefix(p string) string {
	out := make([]rune, 0, len(p)+1)
	for _, r := range p {
		if r == '%' || r == '_' {
			continue // prefixes are plain names; wildcards are not accepted
		}
		out = append(out, r)
	}
	return string(out) + "%"
}
