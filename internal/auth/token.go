package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/store"
)

// TokenPrefix starts every API token, so leaked tokens are easy to find.
const TokenPrefix = "tgm_"

// NewToken returns a fresh random API token.
func NewToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// HashToken is the stored form of a token or session id.
func HashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// Token describes an API token (never its secret).
type Token struct {
	ID         int64  `json:"id"`
	User       string `json:"user"`
	Name       string `json:"name"`
	Env        string `json:"env,omitempty"`
	CreatedAt  int64  `json:"created_at"`
	LastUsedAt int64  `json:"last_used_at"`
	// ExpiresAt is when the token stops working (Unix ms; 0: never).
	ExpiresAt int64 `json:"expires_at,omitempty"`
	Revoked   bool  `json:"revoked"`
}

// Expired reports whether the token has expired by now.
func (t Token) Expired(now time.Time) bool { return t.ExpiresAt != 0 && t.ExpiresAt <= now.UnixMilli() }

// MaxTokenTTL bounds a token's lifetime when one is given.
const MaxTokenTTL = 10 * 365 * 24 * time.Hour

func (s *Service) addToken(ctx context.Context, q store.Querier, userID int64, name, env, tok string, expiresAt int64) (int64, error) {
	return q.InsertID(ctx, `INSERT INTO api_tokens (user_id, name, hash, env, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`,
		userID, name, HashToken(tok), env, store.NowMillis(), expiresAt)
}

// AddEnvSource adds a list of the environments that exist (the config
// center's environments, the registry's namespaces): a token can be
// limited only to one of them. With no source, any well-formed name is
// accepted.
func (s *Service) AddEnvSource(list func(ctx context.Context) ([]string, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.envSources = append(s.envSources, list)
}

func (s *Service) checkEnv(ctx context.Context, env string) error {
	s.mu.Lock()
	srcs := slices.Clone(s.envSources)
	s.mu.Unlock()
	if len(srcs) == 0 {
		return nil
	}
	var known []string
	for _, src := range srcs {
		envs, err := src(ctx)
		if err != nil {
			return fmt.Errorf("auth: list environments: %w", err)
		}
		if slices.Contains(envs, env) {
			return nil
		}
		known = append(known, envs...)
	}
	slices.Sort(known)
	return fmt.Errorf("%w: %q is not an environment or a registry namespace (known: %s)", ErrUnknownEnv, env, strings.Join(slices.Compact(known), ", "))
}

// CreateToken issues a token for user, optionally limited to env (which
// must exist) and expiring after ttl (0: never). The secret is returned
// once and only its hash is stored.
func (s *Service) CreateToken(ctx context.Context, actor, user, name, env string, ttl time.Duration) (string, Token, error) {
	if err := ValidName("token", name); err != nil {
		return "", Token{}, err
	}
	if err := validScope("env", env); err != nil || env == "*" {
		return "", Token{}, fmt.Errorf("%w: token env %q: leave it empty for every environment, or name one", ErrBadName, env)
	}
	if ttl < 0 || ttl > MaxTokenTTL {
		return "", Token{}, fmt.Errorf("%w: token ttl %s: want a positive duration up to %s, or none", ErrBadName, ttl, MaxTokenTTL)
	}
	if env != "" {
		if err := s.checkEnv(ctx, env); err != nil {
			return "", Token{}, err
		}
	}
	u, err := s.UserByName(ctx, user)
	if err != nil {
		return "", Token{}, err
	}
	var expiresAt int64
	if ttl > 0 {
		expiresAt = time.Now().Add(ttl).UnixMilli()
	}
	tok := NewToken()
	var id int64
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		var err error
		if id, err = s.addToken(ctx, tx, u.ID, name, env, tok, expiresAt); err != nil {
			return err
		}
		after := "env=" + env + " secret=***"
		if expiresAt != 0 {
			after += " expires=" + time.UnixMilli(expiresAt).UTC().Format(time.RFC3339)
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.token.create", Resource: "user/" + user + "/token/" + name, After: after})
	})
	if err != nil {
		return "", Token{}, fmt.Errorf("auth: create token: %w", err)
	}
	return tok, Token{ID: id, User: user, Name: name, Env: env, CreatedAt: store.NowMillis(), ExpiresAt: expiresAt}, nil
}

// ListTokens lists tokens, of one user or all when user is "".
func (s *Service) ListTokens(ctx context.Context, user string) ([]Token, error) {
	q := `SELECT t.id, u.name, t.name, t.env, t.created_at, t.last_used_at, t.expires_at, t.revoked FROM api_tokens t JOIN users u ON u.id = t.user_id`
	var args []any
	if user != "" {
		q += ` WHERE u.name = ?`
		args = append(args, user)
	}
	rows, err := s.st.QueryContext(ctx, q+` ORDER BY t.id`, args...)
	if err != nil {
		return nil, fmt.Errorf("auth: list tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		var t Token
		var rev int
		if err := rows.Scan(&t.ID, &t.User, &t.Name, &t.Env, &t.CreatedAt, &t.LastUsedAt, &t.ExpiresAt, &rev); err != nil {
			return nil, err
		}
		t.Revoked = rev != 0
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeToken revokes a token by id.
func (s *Service) RevokeToken(ctx context.Context, actor string, id int64) error {
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE api_tokens SET revoked = 1 WHERE id = ?`, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: id %d", ErrTokenNotFound, id)
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.token.revoke", Resource: "token/" + strconv.FormatInt(id, 10)})
	})
	s.flush()
	return err
}

// AuthenticateToken resolves a bearer token. Results are cached for a few
// seconds so that long-poll clients do not hit the store on every request;
// revocation on this server applies at once, on other servers within the TTL.
func (s *Service) AuthenticateToken(ctx context.Context, tok string) (*Principal, error) {
	if tok == "" {
		return nil, ErrUnauthenticated
	}
	if st := s.serviceToken.Load(); st != nil && subtle.ConstantTimeCompare([]byte(tok), []byte(*st)) == 1 {
		return &Principal{Name: ServicePrincipal, Bindings: []Binding{{Role: Admin, Env: "*", App: "*", NS: "*"}}}, nil
	}
	h := HashToken(tok)
	now := time.Now()
	s.mu.Lock()
	if c, ok := s.cache[h]; ok && now.Before(c.expires) {
		s.mu.Unlock()
		return c.p, nil
	}
	s.mu.Unlock()
	var (
		id, userID, expiresAt int64
		env, name             string
		revoked               int
		disabled              int
	)
	err := s.st.QueryRowContext(ctx, `SELECT t.id, t.user_id, t.env, t.expires_at, t.revoked, u.name, u.disabled FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ?`, h).
		Scan(&id, &userID, &env, &expiresAt, &revoked, &name, &disabled)
	if errors.Is(err, sql.ErrNoRows) || revoked != 0 || disabled != 0 || (expiresAt != 0 && expiresAt <= now.UnixMilli()) {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("auth: look up token: %w", err)
	}
	bs, err := s.bindings(ctx, userID)
	if err != nil {
		return nil, err
	}
	p := &Principal{UserID: userID, Name: name, Bindings: bs, TokenEnv: env}
	_, _ = s.st.ExecContext(ctx, `UPDATE api_tokens SET last_used_at = ? WHERE id = ?`, store.NowMillis(), id)
	s.mu.Lock()
	if len(s.cache) > 100_000 {
		clear(s.cache)
	}
	until := now.Add(s.ttl)
	if exp := time.UnixMilli(expiresAt); expiresAt != 0 && exp.Before(until) {
		until = exp
	}
	s.cache[h] = cachedPrincipal{p: p, expires: until}
	s.mu.Unlock()
	return p, nil
}
