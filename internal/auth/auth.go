// Package auth holds Tangram's users, roles and API tokens and authenticates
// requests.
//
// Roles are bound to a user with a scope (environment, app, namespace; "*"
// matches any). From weakest to strongest: viewer (read), editor (read and
// edit drafts), releaser (editor plus publish, rollback, approve), admin
// (everything, including users and tokens). API tokens and console sessions
// are stored only as SHA-256 hashes; passwords as PBKDF2-SHA256. A token may
// be limited to one environment (environment isolation): it then grants
// nothing outside it.
package auth

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/internal/ident"

	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/store"
)

// Sentinel errors.
var (
	ErrUnauthenticated = errcode.New(errcode.Unauthorized, "auth: missing or invalid credentials")
	ErrForbidden       = errcode.New(errcode.Forbidden, "auth: permission denied")
	ErrUserNotFound    = errcode.New(errcode.NotFound, "auth: user not found")
	ErrUserExists      = errcode.New(errcode.AlreadyExists, "auth: user already exists")
	ErrBadRole         = errcode.New(errcode.BadRequest, "auth: unknown role")
	ErrBadName         = errcode.New(errcode.BadRequest, "auth: bad name")
	ErrTooManyAttempts = errcode.New(errcode.TooManyRequests, "auth: too many failed sign-ins; wait a minute")
	ErrTokenNotFound   = errcode.New(errcode.NotFound, "auth: token not found")
)

// dummyHash is checked against when a sign-in names no user, so that such a
// sign-in costs as long as one with a wrong password. It is made on first
// use: 210,000 PBKDF2 rounds at program start would slow every command and
// every program that links this package.
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword("tangram-no-such-user")
	return h
})

// Failed sign-ins are limited per client address and user name: after
// maxFailures within failureWindow, sign-ins from that address for that
// name are refused until the window passes. Each attempt costs a PBKDF2
// computation, so this also bounds the CPU an attacker can spend.
const (
	maxFailures   = 5
	failureWindow = time.Minute
)

type failureLog struct {
	mu sync.Mutex
	m  map[string][]time.Time
}

func (f *failureLog) key(remote, name string) string { return remote + "\x00" + name }

func (f *failureLog) recent(k string, now time.Time) []time.Time {
	ts := f.m[k]
	i := 0
	for i < len(ts) && now.Sub(ts[i]) > failureWindow {
		i++
	}
	return ts[i:]
}

func (f *failureLog) blocked(remote, name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.recent(f.key(remote, name), time.Now())) >= maxFailures
}

func (f *failureLog) fail(remote, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil || len(f.m) > 100_000 {
		f.m = map[string][]time.Time{}
	}
	k, now := f.key(remote, name), time.Now()
	f.m[k] = append(f.recent(k, now), now)
}

func (f *failureLog) reset(remote, name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, f.key(remote, name))
}

// Role is a named set of permissions.
type Role string

// The roles, weakest first.
const (
	Viewer   Role = "viewer"
	Editor   Role = "editor"
	Releaser Role = "releaser"
	Admin    Role = "admin"
)

// Perm is one permission.
type Perm int

// The permissions.
const (
	PermRead Perm = iota + 1
	PermEdit
	PermRelease
	PermAdmin
)

func (p Perm) String() string {
	switch p {
	case PermRead:
		return "read"
	case PermEdit:
		return "edit"
	case PermRelease:
		return "release"
	case PermAdmin:
		return "admin"
	}
	return "perm(" + strconv.Itoa(int(p)) + ")"
}

func (r Role) level() Perm {
	switch r {
	case Viewer:
		return PermRead
	case Editor:
		return PermEdit
	case Releaser:
		return PermRelease
	case Admin:
		return PermAdmin
	}
	return 0
}

// ParseRole validates a role name.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if r.level() == 0 {
		return "", fmt.Errorf("%w %q (want viewer, editor, releaser or admin)", ErrBadRole, s)
	}
	return r, nil
}

// Binding grants a role on a scope. "*" matches any value.
type Binding struct {
	Role Role   `json:"role"`
	Env  string `json:"env"`
	App  string `json:"app"`
	NS   string `json:"ns"`
}

func (b Binding) covers(env, app, ns string) bool {
	m := func(pat, v string) bool { return pat == "*" || v == "" || pat == v }
	return m(b.Env, env) && m(b.App, app) && m(b.NS, ns)
}

// Principal is an authenticated caller.
type Principal struct {
	UserID   int64     `json:"user_id"`
	Name     string    `json:"name"`
	Bindings []Binding `json:"bindings"`
	// TokenEnv, when set, limits the credential to one environment.
	TokenEnv string `json:"token_env,omitempty"`
	// Session is set for console sessions; CSRF is their token.
	Session bool   `json:"-"`
	CSRF    string `json:"-"`
}

// Can reports whether p holds perm on the scope. Empty scope parts mean
// "not scoped" (e.g. env "" for an app-wide operation); they are matched by
// any binding, but a token limited to an environment needs env to equal it
// unless the permission is read on a global listing.
func (p *Principal) Can(perm Perm, env, app, ns string) bool {
	if p == nil {
		return false
	}
	if p.TokenEnv != "" && env != p.TokenEnv && !(env == "" && perm == PermRead) {
		return false
	}
	for _, b := range p.Bindings {
		if b.Role.level() >= perm && b.covers(env, app, ns) {
			return true
		}
	}
	return false
}

// IsAdmin reports whether p is an unrestricted admin.
func (p *Principal) IsAdmin() bool { return p.Can(PermAdmin, "", "", "") && p.TokenEnv == "" }

// Service manages users, roles, tokens and sessions.
type Service struct {
	st  *store.Store
	log *slog.Logger

	mu    sync.Mutex
	cache map[string]cachedPrincipal // token hash -> principal
	ttl   time.Duration

	failures failureLog

	serviceToken atomic.Pointer[string]
}

// ServicePrincipal names the platform itself when its servers call each
// other or their brokers (the console reading broker state).
const ServicePrincipal = "tangram-platform"

// SetServiceToken sets the platform's own token: an admin credential that
// exists in no table, derived by every server from the secret key they
// share (so a broker may check it with any of them).
func (s *Service) SetServiceToken(tok string) { s.serviceToken.Store(&tok) }

type cachedPrincipal struct {
	p       *Principal
	expires time.Time
}

// New returns a Service over st.
func New(st *store.Store, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{st: st, log: log, cache: map[string]cachedPrincipal{}, ttl: 10 * time.Second}
}

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

const pbkdf2Iter = 210_000

// HashPassword returns the stored form of a password.
func HashPassword(pw string) (string, error) {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	key, err := pbkdf2.Key(sha256.New, pw, salt, pbkdf2Iter, 32)
	if err != nil {
		return "", fmt.Errorf("auth: hash password: %w", err)
	}
	return fmt.Sprintf("pbkdf2-sha256$%d$%s$%s", pbkdf2Iter, base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key)), nil
}

// CheckPassword compares pw with a stored hash in constant time.
func CheckPassword(stored, pw string) bool {
	parts := strings.Split(stored, "$")
	if len(parts) != 4 || parts[0] != "pbkdf2-sha256" {
		return false
	}
	iter, err := strconv.Atoi(parts[1])
	if err != nil || iter < 1 {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[2])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[3])
	if err1 != nil || err2 != nil {
		return false
	}
	got, err := pbkdf2.Key(sha256.New, pw, salt, iter, len(want))
	if err != nil {
		return false
	}
	return subtle.ConstantTimeCompare(got, want) == 1
}

// ValidName checks a user or token name.
func ValidName(kind, s string) error {
	if !ident.Name(s, 64, "._@-") {
		return fmt.Errorf("%w: %s %q must be 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", ErrBadName, kind, s)
	}
	return nil
}

// Bootstrap makes sure an admin exists. On the first start (no users) it
// creates user "admin" with the admin role on everything and an API token:
// the given one (TANGRAM_BOOTSTRAP_TOKEN) or a generated one, which it
// returns so the caller can print it once. Later starts return "". When a
// bootstrap token is given on a later start and no token with its hash
// exists, it is added to the admin user, so automation can rely on it.
func (s *Service) Bootstrap(ctx context.Context, token string) (string, error) {
	var n int
	if err := s.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM users`).Scan(&n); err != nil {
		return "", fmt.Errorf("auth: bootstrap: %w", err)
	}
	if n > 0 {
		if token == "" {
			return "", nil
		}
		var exists int
		if err := s.st.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_tokens WHERE hash = ?`, HashToken(token)).Scan(&exists); err != nil {
			return "", fmt.Errorf("auth: bootstrap: %w", err)
		}
		if exists > 0 {
			return "", nil
		}
		u, err := s.UserByName(ctx, "admin")
		if err != nil {
			return "", fmt.Errorf("auth: bootstrap token given but user admin is gone: %w", err)
		}
		err = s.st.InTx(ctx, func(tx *store.Tx) error {
			if _, err := s.addToken(ctx, tx, u.ID, "bootstrap", "", token); err != nil {
				return err
			}
			return audit.Record(ctx, tx, audit.Entry{Actor: "system", Action: "auth.bootstrap.token", Resource: "user/admin", After: "token from TANGRAM_BOOTSTRAP_TOKEN added"})
		})
		return "", err
	}
	generated := token == ""
	if generated {
		token = NewToken()
	}
	if !strings.HasPrefix(token, TokenPrefix) && len(token) < 16 {
		return "", fmt.Errorf("auth: bootstrap token must be at least 16 characters")
	}
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		id, err := tx.InsertID(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, "admin", "", store.NowMillis())
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO role_bindings (user_id, role, env, app, ns, created_at) VALUES (?, ?, '*', '*', '*', ?)`, id, string(Admin), store.NowMillis()); err != nil {
			return err
		}
		if _, err := s.addToken(ctx, tx, id, "bootstrap", "", token); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: "system", Action: "auth.bootstrap", Resource: "user/admin", After: "admin user with bootstrap token"})
	})
	if err != nil {
		if store.IsUniqueViolation(err) { // another server bootstrapped at the same moment
			return "", nil
		}
		return "", fmt.Errorf("auth: bootstrap: %w", err)
	}
	if generated {
		return token, nil
	}
	return "", nil
}

// User is a Tangram user.
type User struct {
	ID        int64     `json:"id"`
	Name      string    `json:"name"`
	CreatedAt int64     `json:"created_at"`
	Disabled  bool      `json:"disabled"`
	Bindings  []Binding `json:"bindings"`
	pwHash    string
}

// UserByName loads a user with their bindings.
func (s *Service) UserByName(ctx context.Context, name string) (*User, error) {
	u := &User{}
	var disabled int
	err := s.st.QueryRowContext(ctx, `SELECT id, name, password_hash, created_at, disabled FROM users WHERE name = ?`, name).
		Scan(&u.ID, &u.Name, &u.pwHash, &u.CreatedAt, &disabled)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %q", ErrUserNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("auth: load user %q: %w", name, err)
	}
	u.Disabled = disabled != 0
	u.Bindings, err = s.bindings(ctx, u.ID)
	return u, err
}

func (s *Service) bindings(ctx context.Context, userID int64) ([]Binding, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT role, env, app, ns FROM role_bindings WHERE user_id = ? ORDER BY id`, userID)
	if err != nil {
		return nil, fmt.Errorf("auth: load bindings: %w", err)
	}
	defer rows.Close()
	var out []Binding
	for rows.Next() {
		var b Binding
		var role string
		if err := rows.Scan(&role, &b.Env, &b.App, &b.NS); err != nil {
			return nil, err
		}
		b.Role = Role(role)
		out = append(out, b)
	}
	return out, rows.Err()
}

// ListUsers returns every user with bindings.
func (s *Service) ListUsers(ctx context.Context) ([]User, error) {
	rows, err := s.st.QueryContext(ctx, `SELECT name FROM users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("auth: list users: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		names = append(names, n)
	}
	rows.Close()
	out := make([]User, 0, len(names))
	for _, n := range names {
		u, err := s.UserByName(ctx, n)
		if err != nil {
			return nil, err
		}
		out = append(out, *u)
	}
	return out, nil
}

// CreateUser adds a user with an optional password and bindings.
func (s *Service) CreateUser(ctx context.Context, actor, name, password string, bindings []Binding) (*User, error) {
	if err := ValidName("user", name); err != nil {
		return nil, err
	}
	for i, b := range bindings {
		if err := b.validate(); err != nil {
			return nil, err
		}
		bindings[i] = normBinding(b)
	}
	hash := ""
	if password != "" {
		if len(password) < 8 {
			return nil, fmt.Errorf("%w: password must be at least 8 characters", ErrBadName)
		}
		var err error
		if hash, err = HashPassword(password); err != nil {
			return nil, err
		}
	}
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		id, err := tx.InsertID(ctx, `INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)`, name, hash, store.NowMillis())
		if err != nil {
			if store.IsUniqueViolation(err) {
				return fmt.Errorf("%w: %q", ErrUserExists, name)
			}
			return err
		}
		for _, b := range bindings {
			if _, err := tx.ExecContext(ctx, `INSERT INTO role_bindings (user_id, role, env, app, ns, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
				id, string(b.Role), b.Env, b.App, b.NS, store.NowMillis()); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.user.create", Resource: "user/" + name, After: audit.Value(bindings)})
	})
	if err != nil {
		return nil, err
	}
	return s.UserByName(ctx, name)
}

// validScope checks a binding's or token's env/app/ns ("" and "*" mean any).
func validScope(kind, v string) error {
	if v != "" && v != "*" && !ident.Name(v, 64, "._-") {
		return fmt.Errorf("%w: %s %q must be * or 1-64 letters, digits, '.', '_' or '-'", ErrBadName, kind, v)
	}
	return nil
}

func (b Binding) validate() error {
	if _, err := ParseRole(string(b.Role)); err != nil {
		return err
	}
	return errors.Join(validScope("env", b.Env), validScope("app", b.App), validScope("namespace", b.NS))
}

func normBinding(b Binding) Binding {
	if b.Env == "" {
		b.Env = "*"
	}
	if b.App == "" {
		b.App = "*"
	}
	if b.NS == "" {
		b.NS = "*"
	}
	return b
}

// Grant adds a binding to a user.
func (s *Service) Grant(ctx context.Context, actor, user string, b Binding) error {
	if err := b.validate(); err != nil {
		return err
	}
	b = normBinding(b)
	u, err := s.UserByName(ctx, user)
	if err != nil {
		return err
	}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO role_bindings (user_id, role, env, app, ns, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
			u.ID, string(b.Role), b.Env, b.App, b.NS, store.NowMillis())
		if err != nil && !store.IsUniqueViolation(err) {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.role.grant", Resource: "user/" + user, Before: audit.Value(u.Bindings), After: audit.Value(b)})
	})
	s.flush()
	return err
}

// Revoke removes a binding from a user.
func (s *Service) Revoke(ctx context.Context, actor, user string, b Binding) error {
	b = normBinding(b)
	u, err := s.UserByName(ctx, user)
	if err != nil {
		return err
	}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM role_bindings WHERE user_id = ? AND role = ? AND env = ? AND app = ? AND ns = ?`,
			u.ID, string(b.Role), b.Env, b.App, b.NS); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.role.revoke", Resource: "user/" + user, Before: audit.Value(b)})
	})
	s.flush()
	return err
}

// Token describes an API token (never its secret).
type Token struct {
	ID         int64  `json:"id"`
	User       string `json:"user"`
	Name       string `json:"name"`
	Env        string `json:"env,omitempty"`
	CreatedAt  int64  `json:"created_at"`
	LastUsedAt int64  `json:"last_used_at"`
	Revoked    bool   `json:"revoked"`
}

func (s *Service) addToken(ctx context.Context, q store.Querier, userID int64, name, env, tok string) (int64, error) {
	return q.InsertID(ctx, `INSERT INTO api_tokens (user_id, name, hash, env, created_at) VALUES (?, ?, ?, ?, ?)`,
		userID, name, HashToken(tok), env, store.NowMillis())
}

// CreateToken issues a token for user, optionally limited to env. The
// secret is returned once and only its hash is stored.
func (s *Service) CreateToken(ctx context.Context, actor, user, name, env string) (string, Token, error) {
	if err := ValidName("token", name); err != nil {
		return "", Token{}, err
	}
	if err := validScope("env", env); err != nil || env == "*" {
		return "", Token{}, fmt.Errorf("%w: token env %q: leave it empty for every environment, or name one", ErrBadName, env)
	}
	u, err := s.UserByName(ctx, user)
	if err != nil {
		return "", Token{}, err
	}
	tok := NewToken()
	var id int64
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		var err error
		if id, err = s.addToken(ctx, tx, u.ID, name, env, tok); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.token.create", Resource: "user/" + user + "/token/" + name, After: "env=" + env + " secret=***"})
	})
	if err != nil {
		return "", Token{}, fmt.Errorf("auth: create token: %w", err)
	}
	return tok, Token{ID: id, User: user, Name: name, Env: env, CreatedAt: store.NowMillis()}, nil
}

// ListTokens lists tokens, of one user or all when user is "".
func (s *Service) ListTokens(ctx context.Context, user string) ([]Token, error) {
	q := `SELECT t.id, u.name, t.name, t.env, t.created_at, t.last_used_at, t.revoked FROM api_tokens t JOIN users u ON u.id = t.user_id`
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
		if err := rows.Scan(&t.ID, &t.User, &t.Name, &t.Env, &t.CreatedAt, &t.LastUsedAt, &rev); err != nil {
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

func (s *Service) flush() {
	s.mu.Lock()
	clear(s.cache)
	s.mu.Unlock()
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
		id, userID int64
		env, name  string
		revoked    int
		disabled   int
	)
	err := s.st.QueryRowContext(ctx, `SELECT t.id, t.user_id, t.env, t.revoked, u.name, u.disabled FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.hash = ?`, h).
		Scan(&id, &userID, &env, &revoked, &name, &disabled)
	if errors.Is(err, sql.ErrNoRows) || revoked != 0 || disabled != 0 {
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
	s.cache[h] = cachedPrincipal{p: p, expires: now.Add(s.ttl)}
	s.mu.Unlock()
	return p, nil
}

// SessionTTL is how long a console session lasts.
const SessionTTL = 12 * time.Hour

// Login checks a user's password, or one of the user's API tokens given in
// place of a password, and opens a console session. It returns the session
// id (for the cookie) and its CSRF token.
func (s *Service) Login(ctx context.Context, name, secret, remote string) (sid, csrf string, err error) {
	if s.failures.blocked(remote, name) {
		return "", "", ErrTooManyAttempts
	}
	u, err := s.UserByName(ctx, name)
	if err != nil || u.Disabled {
		// Spend the time a password check takes, so that the answer does
		// not tell which user names exist.
		CheckPassword(dummyHash(), secret)
		s.failures.fail(remote, name)
		return "", "", ErrUnauthenticated
	}
	ok := u.pwHash != "" && CheckPassword(u.pwHash, secret)
	if !ok && strings.HasPrefix(secret, TokenPrefix) {
		if p, err := s.AuthenticateToken(ctx, secret); err == nil && p.UserID == u.ID && p.TokenEnv == "" {
			ok = true
		}
	}
	if !ok {
		s.failures.fail(remote, name)
		_ = audit.Record(ctx, s.st, audit.Entry{Actor: name, Action: "auth.login.failed", Resource: "user/" + name, Remote: remote})
		return "", "", ErrUnauthenticated
	}
	s.failures.reset(remote, name)
	sid = NewToken()
	csrf = NewToken()
	now := time.Now()
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at < ?`, now.UnixMilli()); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO sessions (hash, user_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
			HashToken(sid), u.ID, csrf, now.UnixMilli(), now.Add(SessionTTL).UnixMilli()); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: name, Action: "auth.login", Resource: "user/" + name, Remote: remote})
	})
	if err != nil {
		return "", "", fmt.Errorf("auth: login: %w", err)
	}
	return sid, csrf, nil
}

// Logout ends a session.
func (s *Service) Logout(ctx context.Context, sid string) error {
	_, err := s.st.ExecContext(ctx, `DELETE FROM sessions WHERE hash = ?`, HashToken(sid))
	return err
}

// AuthenticateSession resolves a console session cookie.
func (s *Service) AuthenticateSession(ctx context.Context, sid string) (*Principal, error) {
	if sid == "" {
		return nil, ErrUnauthenticated
	}
	var userID, expires int64
	var csrf, name string
	var disabled int
	err := s.st.QueryRowContext(ctx, `SELECT s.user_id, s.csrf, s.expires_at, u.name, u.disabled FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = ?`, HashToken(sid)).
		Scan(&userID, &csrf, &expires, &name, &disabled)
	if errors.Is(err, sql.ErrNoRows) || disabled != 0 || expires < store.NowMillis() {
		return nil, ErrUnauthenticated
	}
	if err != nil {
		return nil, fmt.Errorf("auth: look up session: %w", err)
	}
	bs, err := s.bindings(ctx, userID)
	if err != nil {
		return nil, err
	}
	return &Principal{UserID: userID, Name: name, Bindings: bs, Session: true, CSRF: csrf}, nil
}

// SetPassword changes a user's password.
func (s *Service) SetPassword(ctx context.Context, actor, user, password string) error {
	if len(password) < 8 {
		return fmt.Errorf("%w: password must be at least 8 characters", ErrBadName)
	}
	h, err := HashPassword(password)
	if err != nil {
		return err
	}
	return s.st.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE users SET password_hash = ? WHERE name = ?`, h, user)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: %q", ErrUserNotFound, user)
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.user.password", Resource: "user/" + user, After: "***"})
	})
}

// MethodPrincipal is the RPC method (served by tangram server) that answers
// with the caller's principal: brokers running apart from the servers
// authenticate their clients' tokens through it.
const MethodPrincipal = "tangram.Platform/Principal"

// PrincipalReply answers MethodPrincipal: the caller's identity and
// bindings.
type PrincipalReply struct {
	Principal Principal `msgpack:"principal"`
}

// Visible keeps the items the caller in ctx may read; scope names an
// item's environment (or registry namespace), app and namespace. Lists
// served over HTTP and shown in the console filter through it.
func Visible[T any](ctx context.Context, items []T, scope func(T) (env, app, ns string)) []T {
	p := FromContext(ctx)
	out := make([]T, 0, len(items))
	for _, it := range items {
		if e, a, n := scope(it); p.Can(PermRead, e, a, n) {
			out = append(out, it)
		}
	}
	return out
}
