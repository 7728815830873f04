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
	"database/sql"
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
	ErrBadPassword     = errcode.New(errcode.BadRequest, "auth: unacceptable password")
	ErrWrongPassword   = errcode.New(errcode.Forbidden, "auth: the current password is wrong")
	ErrUnknownEnv      = errcode.New(errcode.BadRequest, "auth: no such environment")
)

// The roles (docs/security.md).
const (
	Viewer     Role = "viewer"   // read
	Editor     Role = "editor"   // read, edit drafts and jobs
	Releaser   Role = "releaser" // editor, publish, roll back, approve, secrets
	Admin      Role = "admin"    // everything
	ClientRole Role = "client"   // an application: read and fetch secrets in clear
	BrokerRole Role = "broker"   // an MQ broker host: register and replicate, nothing else
)

// The permissions.
const (
	PermRead Perm = iota + 1
	PermEdit
	PermRelease
	PermAdmin
	PermSecrets // receive secret config values in clear (the client fetch, reveal)
	PermBroker  // register a broker with the name service, replicate from a master
)

// Service manages users, roles, tokens and sessions.
type Service struct {
	st  *store.Store
	log *slog.Logger

	mu    sync.Mutex
	cache map[string]cachedPrincipal // token hash -> principal
	ttl   time.Duration

	failures failureLog

	serviceToken atomic.Pointer[string]
	envSources   []func(ctx context.Context) ([]string, error) // guarded by mu
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
			if _, err := s.addToken(ctx, tx, u.ID, "bootstrap", "", token, 0); err != nil {
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
		if _, err := s.addToken(ctx, tx, id, "bootstrap", "", token, 0); err != nil {
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

// CreateUser adds a user with bindings. A user has a console password
// (at least 8 characters) unless spec.TokenOnly, in which case it has none
// and signs in only with its unrestricted API tokens (service accounts,
// broker hosts).
func (s *Service) CreateUser(ctx context.Context, actor string, spec UserSpec) (*User, error) {
	name, bindings := spec.Name, spec.Bindings
	if err := ValidName("user", name); err != nil {
		return nil, err
	}
	for i, b := range bindings {
		if err := b.validate(); err != nil {
			return nil, err
		}
		bindings[i] = normBinding(b)
	}
	switch {
	case spec.TokenOnly && spec.Password != "":
		return nil, fmt.Errorf("%w: a token-only user has no password; give one or the other", ErrBadPassword)
	case !spec.TokenOnly:
		if err := checkNewPassword(spec.Password); err != nil {
			return nil, err
		}
	}
	hash := ""
	if spec.Password != "" {
		var err error
		if hash, err = HashPassword(spec.Password); err != nil {
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
		after := audit.Value(bindings)
		if spec.TokenOnly {
			after += " token-only"
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.user.create", Resource: "user/" + name, After: after})
	})
	if err != nil {
		return nil, err
	}
	return s.UserByName(ctx, name)
}

// SetDisabled disables a user (every token and session stops working at
// once, and the sessions are deleted) or enables them again.
func (s *Service) SetDisabled(ctx context.Context, actor, user string, disabled bool) error {
	u, err := s.UserByName(ctx, user)
	if err != nil {
		return err
	}
	action := "auth.user.enable"
	if disabled {
		action = "auth.user.disable"
	}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE users SET disabled = ? WHERE id = ?`, b2i(disabled), u.ID); err != nil {
			return err
		}
		if disabled {
			if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ?`, u.ID); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: action, Resource: "user/" + user})
	})
	s.flush()
	if err != nil {
		return fmt.Errorf("auth: %s %q: %w", action, user, err)
	}
	return nil
}

// EndSessions signs a user out of every console session but keep (a
// session id, or "" for none). It returns how many ended.
func (s *Service) EndSessions(ctx context.Context, actor, user, keep string) (int64, error) {
	u, err := s.UserByName(ctx, user)
	if err != nil {
		return 0, err
	}
	var n int64
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ? AND hash <> ?`, u.ID, HashToken(keep))
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		return audit.Record(ctx, tx, audit.Entry{Actor: actor, Action: "auth.user.sessions.end", Resource: "user/" + user, After: strconv.FormatInt(n, 10) + " session(s) ended"})
	})
	if err != nil {
		return 0, fmt.Errorf("auth: end sessions of %q: %w", user, err)
	}
	return n, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
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

func (s *Service) flush() {
	s.mu.Lock()
	clear(s.cache)
	s.mu.Unlock()
}

// SessionTTL is how long a console session lasts.
const SessionTTL = 12 * time.Hour

// Login checks a user's password, or one of the user's API tokens given in
// place of a password, and opens a console session. It returns the session
// id (for the cookie) and its CSRF token.
func (s *Service) Login(ctx context.Context, name, secret, remote string) (sid, csrf string, err error) {
	if blocked, first := s.failures.blocked(remote, name); blocked {
		if first { // once per lock-out, so a flood cannot fill the audit log
			_ = audit.Record(ctx, s.st, audit.Entry{Actor: name, Action: "auth.login.locked", Resource: "user/" + name, Remote: remote,
				After: fmt.Sprintf("%d failed sign-ins within %s; refused until the window passes", maxFailures, failureWindow)})
		}
		return "", "", ErrTooManyAttempts
	}
	u, err := s.UserByName(ctx, name)
	if err != nil || u.Disabled {
		// Spend the time a password check takes, so that the answer does
		// not tell which user names exist.
		CheckPassword(dummyHash(), secret)
		s.failures.fail(remote, name)
		reason := "unknown user"
		if err == nil {
			reason = "user disabled"
		}
		_ = audit.Record(ctx, s.st, audit.Entry{Actor: name, Action: "auth.login.failed", Resource: "user/" + name, Remote: remote, After: reason})
		return "", "", ErrUnauthenticated
	}
	// A user without a password (token-only) costs the same check, so the
	// answer's time does not tell that either.
	stored := u.pwHash
	if stored == "" {
		stored = dummyHash()
	}
	ok := CheckPassword(stored, secret) && u.pwHash != ""
	if !ok && strings.HasPrefix(secret, TokenPrefix) {
		if p, err := s.AuthenticateToken(ctx, secret); err == nil && p.UserID == u.ID && p.TokenEnv == "" {
			ok = true
		}
	}
	if !ok {
		s.failures.fail(remote, name)
		_ = audit.Record(ctx, s.st, audit.Entry{Actor: name, Action: "auth.login.failed", Resource: "user/" + name, Remote: remote, After: "wrong password or token"})
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
	return &Principal{UserID: userID, Name: name, Bindings: bs, Session: true, CSRF: csrf, sessionID: sid}, nil
}

// MethodPrincipal is the RPC method (served by tangram server) that answers
// with the caller's principal: brokers running apart from the servers
// authenticate their clients' tokens through it.
const MethodPrincipal = "tangram.Platform/Principal"

// MethodAudit (served by tangram server) records an audit entry sent by a
// broker running apart from the servers (its mutations: topics created and
// deleted, offsets reset, dead letters resent). The caller needs the
// broker role; Actor names the broker's client who made the change.
const MethodAudit = "tangram.Platform/Audit"

// AuditRequest is one entry for MethodAudit.
type AuditRequest struct {
	Actor    string `msgpack:"actor"`
	Action   string `msgpack:"action"`
	Resource string `msgpack:"resource"`
	After    string `msgpack:"after,omitempty"`
	Remote   string `msgpack:"remote,omitempty"`
}

// PrincipalReply answers MethodPrincipal: the caller's identity and
// bindings.
type PrincipalReply struct {
	Principal Principal `msgpack:"principal"`
}
