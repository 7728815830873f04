package auth

import (
	"context"
	"net/url"
	"strconv"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/audit"
)

// UserSpec is the body that creates a user: a password of at least 8
// characters, or TokenOnly for a user that signs in only with API tokens.
type UserSpec struct {
	Name      string    `json:"name"`
	Password  string    `json:"password,omitempty"`
	TokenOnly bool      `json:"token_only,omitempty"`
	Bindings  []Binding `json:"bindings"`
}

// PasswordChange is the body that changes a password. Current is the
// caller's current password (or, for a user without one, an unrestricted
// API token of theirs); an unrestricted admin setting another user's
// password leaves it empty.
type PasswordChange struct {
	Current  string `json:"current,omitempty"`
	Password string `json:"password"`
}

// TokenSpec is the body that creates an API token; User empty means the
// caller, Env non-empty limits the token to one environment, TTL (a Go
// duration such as "720h") makes it expire.
type TokenSpec struct {
	User string `json:"user"`
	Name string `json:"name"`
	Env  string `json:"env"`
	TTL  string `json:"ttl,omitempty"`
}

// CreatedToken is a new token: the secret, shown once, and its record.
type CreatedToken struct {
	Token string `json:"token"`
	Info  Token  `json:"info"`
}

// AuditFilter selects audit entries, newest first.
type AuditFilter struct {
	Limit          int
	ActionPrefix   string
	Actor          string
	ResourcePrefix string
}

// Client is a typed client for the platform's users, roles, tokens and
// audit log (/api/v1/auth, /api/v1/audit), used by the CLI.
type Client struct{ c *apiclient.Client }

// NewClient returns a client for the server at base authenticating
// with an API token.
func NewClient(base, token string) *Client { return &Client{c: apiclient.New(base, token)} }

// WhoAmI returns the token's principal.
func (a *Client) WhoAmI(ctx context.Context) (Principal, error) {
	var out Principal
	err := a.c.Do(ctx, "GET", "/api/v1/auth/whoami", nil, &out)
	return out, err
}

// Users lists users (admin).
func (a *Client) Users(ctx context.Context) ([]User, error) {
	var out api.List[User]
	err := a.c.Do(ctx, "GET", "/api/v1/auth/users", nil, &out)
	return out.Items, err
}

// CreateUser creates a user (admin).
func (a *Client) CreateUser(ctx context.Context, u UserSpec) (User, error) {
	var out User
	err := a.c.Do(ctx, "POST", "/api/v1/auth/users", u, &out)
	return out, err
}

// Grant adds a role binding to a user (admin).
func (a *Client) Grant(ctx context.Context, user string, b Binding) error {
	return a.c.Do(ctx, "POST", "/api/v1/auth/users/"+url.PathEscape(user)+"/roles", b, nil)
}

// Revoke removes a role binding from a user (admin).
func (a *Client) Revoke(ctx context.Context, user string, b Binding) error {
	return a.c.Do(ctx, "POST", "/api/v1/auth/users/"+url.PathEscape(user)+"/roles/revoke", b, nil)
}

// ChangePassword changes a user's password (see PasswordChange).
func (a *Client) ChangePassword(ctx context.Context, user string, pc PasswordChange) error {
	return a.c.Do(ctx, "POST", "/api/v1/auth/users/"+url.PathEscape(user)+"/password", pc, nil)
}

// SetDisabled disables a user (ending their sessions; their tokens stop
// working) or enables them again (admin).
func (a *Client) SetDisabled(ctx context.Context, user string, disabled bool) error {
	verb := "enable"
	if disabled {
		verb = "disable"
	}
	return a.c.Do(ctx, "POST", "/api/v1/auth/users/"+url.PathEscape(user)+"/"+verb, nil, nil)
}

// EndSessions signs a user out of every console session (admin, or the
// user themself for their other sessions).
func (a *Client) EndSessions(ctx context.Context, user string) (int64, error) {
	var out struct {
		Ended int64 `json:"ended"`
	}
	err := a.c.Do(ctx, "DELETE", "/api/v1/auth/users/"+url.PathEscape(user)+"/sessions", nil, &out)
	return out.Ended, err
}

// CreateToken creates an API token.
func (a *Client) CreateToken(ctx context.Context, t TokenSpec) (CreatedToken, error) {
	var out CreatedToken
	err := a.c.Do(ctx, "POST", "/api/v1/auth/tokens", t, &out)
	return out, err
}

// Tokens lists API tokens.
func (a *Client) Tokens(ctx context.Context) ([]Token, error) {
	var out api.List[Token]
	err := a.c.Do(ctx, "GET", "/api/v1/auth/tokens", nil, &out)
	return out.Items, err
}

// RevokeToken revokes a token (admin).
func (a *Client) RevokeToken(ctx context.Context, id int64) error {
	return a.c.Do(ctx, "DELETE", "/api/v1/auth/tokens/"+strconv.FormatInt(id, 10), nil, nil)
}

// Audit lists audit entries, newest first (admin).
func (a *Client) Audit(ctx context.Context, f AuditFilter) ([]audit.Entry, error) {
	q := url.Values{}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	if f.ActionPrefix != "" {
		q.Set("action", f.ActionPrefix)
	}
	if f.Actor != "" {
		q.Set("actor", f.Actor)
	}
	if f.ResourcePrefix != "" {
		q.Set("resource", f.ResourcePrefix)
	}
	var out api.List[audit.Entry]
	err := a.c.Do(ctx, "GET", "/api/v1/audit?"+q.Encode(), nil, &out)
	return out.Items, err
}
