package auth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/internal/store/storetest"
)

// fixture is an auth service with its HTTP API on a real socket.
type fixture struct {
	st    *store.Store
	s     *auth.Service
	url   string
	admin string // the bootstrap admin's unrestricted token
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st := storetest.Open(t, "sqlite")
	s := auth.New(st, nil)
	tok, err := s.Bootstrap(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	s.Register(mux, s.Require)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &fixture{st: st, s: s, url: srv.URL, admin: tok}
}

// do sends a JSON request with a bearer token and returns the status and
// the decoded error code, if any.
func (f *fixture) do(t *testing.T, token, method, path string, body any) int {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, f.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func (f *fixture) user(t *testing.T, name, password string, b auth.Binding) {
	t.Helper()
	if _, err := f.s.CreateUser(context.Background(), "admin", auth.UserSpec{Name: name, Password: password, Bindings: []auth.Binding{b}}); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) token(t *testing.T, user, env string) string {
	t.Helper()
	tok, _, err := f.s.CreateToken(context.Background(), "admin", user, "t-"+env+"-"+strings.ReplaceAll(time.Now().Format("150405.000000"), ".", ""), env, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// TestScopedTokensCannotWiden tries every way a credential limited to one
// environment could mint a wider one: set a password (then sign in to a
// session without the limit), create a token, grant a role, create a
// user, sign in with the token itself. Each must be refused, for a
// releaser's dev token and for an admin's prod token alike.
func TestScopedTokensCannotWiden(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.user(t, "rel", "rel-password-1", auth.Binding{Role: auth.Releaser})
	f.user(t, "boss", "boss-password-1", auth.Binding{Role: auth.Admin})
	for _, c := range []struct{ user, pw, env string }{{"rel", "rel-password-1", "dev"}, {"boss", "boss-password-1", "prod"}} {
		scoped := f.token(t, c.user, c.env)
		steps := []struct {
			what         string
			method, path string
			body         any
		}{
			{"password without the current one", "POST", "/api/v1/auth/users/" + c.user + "/password", auth.PasswordChange{Password: "new-password-9"}},
			{"password with a wrong current one", "POST", "/api/v1/auth/users/" + c.user + "/password", auth.PasswordChange{Current: "guess-guess", Password: "new-password-9"}},
			{"password with the scoped token as the current one", "POST", "/api/v1/auth/users/" + c.user + "/password", auth.PasswordChange{Current: scoped, Password: "new-password-9"}},
			{"an unrestricted token for self", "POST", "/api/v1/auth/tokens", auth.TokenSpec{Name: "wide"}},
			{"a token in the same environment", "POST", "/api/v1/auth/tokens", auth.TokenSpec{Name: "same", Env: c.env}},
			{"a role on every environment", "POST", "/api/v1/auth/users/" + c.user + "/roles", auth.Binding{Role: auth.Admin}},
			{"a new user", "POST", "/api/v1/auth/users", auth.UserSpec{Name: "sock", Password: "sock-password-1", Bindings: []auth.Binding{{Role: auth.Admin}}}},
			{"another user's password", "POST", "/api/v1/auth/users/admin/password", auth.PasswordChange{Password: "new-password-9"}},
			{"ending another user's sessions", "DELETE", "/api/v1/auth/users/admin/sessions", nil},
			{"disabling a user", "POST", "/api/v1/auth/users/admin/disable", nil},
		}
		for _, st := range steps {
			if code := f.do(t, scoped, st.method, st.path, st.body); code != http.StatusForbidden {
				t.Errorf("%s's %s-only token: %s answered %d, want 403", c.user, c.env, st.what, code)
			}
		}
		// The password is unchanged and the token is not a sign-in secret.
		if _, _, err := f.s.Login(ctx, c.user, "new-password-9", "192.0.2.1"); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%s signed in with the password a scoped token tried to set: %v", c.user, err)
		}
		if _, _, err := f.s.Login(ctx, c.user, scoped, "192.0.2.2"); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Errorf("%s signed in with a %s-only token: %v", c.user, c.env, err)
		}
		if _, err := f.s.UserByName(ctx, "sock"); !errors.Is(err, auth.ErrUserNotFound) {
			t.Errorf("a scoped token created a user: %v", err)
		}
	}
}

// TestPasswordChange: one's own password needs the current one (an admin's
// too); an unrestricted admin sets another's outright; either way every
// other session of the user ends.
func TestPasswordChange(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.user(t, "ann", "ann-password-1", auth.Binding{Role: auth.Editor})
	annTok := f.token(t, "ann", "")
	old, _, err := f.s.Login(ctx, "ann", "ann-password-1", "192.0.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if code := f.do(t, annTok, "POST", "/api/v1/auth/users/ann/password", auth.PasswordChange{Password: "ann-password-2"}); code != 403 {
		t.Fatalf("own password without the current one: %d", code)
	}
	if code := f.do(t, annTok, "POST", "/api/v1/auth/users/ann/password", auth.PasswordChange{Current: "ann-password-1", Password: "short"}); code != 400 {
		t.Fatalf("short new password: %d", code)
	}
	if code := f.do(t, annTok, "POST", "/api/v1/auth/users/ann/password", auth.PasswordChange{Current: "ann-password-1", Password: "ann-password-2"}); code != 204 {
		t.Fatalf("own password with the current one: %d", code)
	}
	if _, err := f.s.AuthenticateSession(ctx, old); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("the session from before the change still works: %v", err)
	}
	if _, _, err := f.s.Login(ctx, "ann", "ann-password-2", "192.0.2.3"); err != nil {
		t.Fatal(err)
	}
	// The admin, on someone else: no current password needed; sessions end.
	s2, _, err := f.s.Login(ctx, "ann", "ann-password-2", "192.0.2.3")
	if err != nil {
		t.Fatal(err)
	}
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/users/ann/password", auth.PasswordChange{Password: "ann-password-3"}); code != 204 {
		t.Fatalf("admin resetting ann: %d", code)
	}
	if _, err := f.s.AuthenticateSession(ctx, s2); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("a reset left ann's session valid: %v", err)
	}
	// The admin on themself: the bootstrap admin has no password, so the
	// current secret is one of their unrestricted tokens.
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/users/admin/password", auth.PasswordChange{Password: "admin-password-1"}); code != 403 {
		t.Fatalf("admin's own password without the current secret: %d", code)
	}
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/users/admin/password", auth.PasswordChange{Current: f.admin, Password: "admin-password-1"}); code != 204 {
		t.Fatalf("admin's own password with their token: %d", code)
	}
	es, err := audit.List(ctx, f.st, audit.Filter{ActionPrefix: "auth.user.password"})
	if err != nil || len(es) == 0 || es[0].Remote != "127.0.0.1" {
		t.Fatalf("password changes are audited with their source address: %+v %v", es, err)
	}
}

func TestDisableAndEndSessions(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.user(t, "dan", "dan-password-1", auth.Binding{Role: auth.Viewer})
	tok := f.token(t, "dan", "")
	sid, _, err := f.s.Login(ctx, "dan", "dan-password-1", "192.0.2.4")
	if err != nil {
		t.Fatal(err)
	}
	if code := f.do(t, f.admin, "DELETE", "/api/v1/auth/users/dan/sessions", nil); code != 200 {
		t.Fatalf("end sessions: %d", code)
	}
	if _, err := f.s.AuthenticateSession(ctx, sid); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("an ended session works: %v", err)
	}
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/users/dan/disable", nil); code != 204 {
		t.Fatalf("disable: %d", code)
	}
	if _, err := f.s.AuthenticateToken(ctx, tok); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("a disabled user's token works: %v", err)
	}
	if _, _, err := f.s.Login(ctx, "dan", "dan-password-1", "192.0.2.4"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("a disabled user signed in: %v", err)
	}
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/users/admin/disable", nil); code != 400 {
		t.Fatalf("an admin disabled themself: %d", code)
	}
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/users/dan/enable", nil); code != 204 {
		t.Fatalf("enable: %d", code)
	}
	if _, err := f.s.AuthenticateToken(ctx, tok); err != nil {
		t.Fatalf("an enabled user's token: %v", err)
	}
}

func TestTokenExpiry(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/tokens", auth.TokenSpec{Name: "x", TTL: "soon"}); code != 400 {
		t.Fatalf("ttl soon: %d", code)
	}
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/tokens", auth.TokenSpec{Name: "x", TTL: "-1h"}); code != 400 {
		t.Fatalf("negative ttl: %d", code)
	}
	if _, _, err := f.s.CreateToken(ctx, "admin", "admin", "x", "", 100*365*24*time.Hour); !errors.Is(err, auth.ErrBadName) {
		t.Fatalf("century ttl: %v", err)
	}
	tok, info, err := f.s.CreateToken(ctx, "admin", "admin", "day", "", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.UnixMilli(info.ExpiresAt).Sub(time.Now()); d < 23*time.Hour || d > 24*time.Hour {
		t.Fatalf("expires in %s", d)
	}
	if _, err := f.s.AuthenticateToken(ctx, tok); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	// A token whose time has come is refused (the store's clock is the
	// authority; moving expires_at stands in for a day passing).
	tok2, info2, err := f.s.CreateToken(ctx, "admin", "admin", "gone", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.ExecContext(ctx, `UPDATE api_tokens SET expires_at = ? WHERE id = ?`, time.Now().Add(-time.Millisecond).UnixMilli(), info2.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.AuthenticateToken(ctx, tok2); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("expired token: %v", err)
	}
	ts, err := f.s.ListTokens(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range ts {
		if x.ID == info2.ID && !x.Expired(time.Now()) {
			t.Fatalf("listing does not show the expiry: %+v", x)
		}
	}
}

func TestUsersNeedPasswords(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/users", auth.UserSpec{Name: "nopw"}); code != 400 {
		t.Fatalf("user without a password: %d", code)
	}
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/users", auth.UserSpec{Name: "both", Password: "pw-password-1", TokenOnly: true}); code != 400 {
		t.Fatalf("token-only user with a password: %d", code)
	}
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/users", auth.UserSpec{Name: "svc", TokenOnly: true}); code != 201 {
		t.Fatalf("token-only user: %d", code)
	}
	if _, _, err := f.s.Login(ctx, "svc", "", "192.0.2.5"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("a token-only user signed in with an empty password: %v", err)
	}
	if code := f.do(t, f.admin, "POST", "/api/v1/auth/users", nil); code != 400 {
		t.Fatalf("null body: %d", code)
	}
}

func TestFailedSignInsAudited(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if _, _, err := f.s.Login(ctx, "ghost", "whatever-1", "192.0.2.6"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatal(err)
	}
	f.user(t, "eve", "eve-password-1", auth.Binding{Role: auth.Viewer})
	for i := 0; i < 5; i++ {
		_, _, _ = f.s.Login(ctx, "eve", "wrong-password", "192.0.2.7")
	}
	for i := 0; i < 3; i++ {
		if _, _, err := f.s.Login(ctx, "eve", "eve-password-1", "192.0.2.7"); !errors.Is(err, auth.ErrTooManyAttempts) {
			t.Fatalf("locked out attempt %d: %v", i, err)
		}
	}
	failed, err := audit.List(ctx, f.st, audit.Filter{ActionPrefix: "auth.login.failed"})
	if err != nil {
		t.Fatal(err)
	}
	var ghost, eve int
	for _, e := range failed {
		switch {
		case e.Resource == "user/ghost" && e.After == "unknown user" && e.Remote == "192.0.2.6":
			ghost++
		case e.Resource == "user/eve":
			eve++
		}
	}
	if ghost != 1 || eve != 5 {
		t.Fatalf("failed sign-ins audited: ghost %d (want 1), eve %d (want 5)", ghost, eve)
	}
	locked, err := audit.List(ctx, f.st, audit.Filter{ActionPrefix: "auth.login.locked"})
	if err != nil || len(locked) != 1 || locked[0].Remote != "192.0.2.7" {
		t.Fatalf("a lock-out is audited once: %+v %v", locked, err)
	}
}

func TestTokenEnvMustExist(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	f.s.AddEnvSource(func(context.Context) ([]string, error) { return []string{"dev", "prod"}, nil })
	if _, _, err := f.s.CreateToken(ctx, "admin", "admin", "typo", "prdo", 0); !errors.Is(err, auth.ErrUnknownEnv) || !strings.Contains(err.Error(), "dev, prod") {
		t.Fatalf("token for a missing environment: %v", err)
	}
	if _, _, err := f.s.CreateToken(ctx, "admin", "admin", "ok", "prod", 0); err != nil {
		t.Fatal(err)
	}
}

func TestNarrowRoles(t *testing.T) {
	broker := &auth.Principal{Bindings: []auth.Binding{{Role: auth.BrokerRole, Env: "*", App: "*", NS: "*"}}}
	if !broker.Can(auth.PermBroker, "", "", "") || broker.Can(auth.PermRead, "dev", "demo", "") || broker.Can(auth.PermAdmin, "", "", "") {
		t.Fatal("the broker role holds exactly the broker permission")
	}
	client := &auth.Principal{Bindings: []auth.Binding{{Role: auth.ClientRole, Env: "prod", App: "demo", NS: "*"}}}
	if !client.Can(auth.PermSecrets, "prod", "demo", "db") || client.Can(auth.PermEdit, "prod", "demo", "db") || client.Can(auth.PermSecrets, "prod", "other", "db") {
		t.Fatal("the client role reads and fetches secrets of its scope only")
	}
	viewer := &auth.Principal{Bindings: []auth.Binding{{Role: auth.Viewer, Env: "*", App: "*", NS: "*"}}}
	editor := &auth.Principal{Bindings: []auth.Binding{{Role: auth.Editor, Env: "*", App: "*", NS: "*"}}}
	releaser := &auth.Principal{Bindings: []auth.Binding{{Role: auth.Releaser, Env: "*", App: "*", NS: "*"}}}
	if viewer.Can(auth.PermSecrets, "prod", "demo", "") || editor.Can(auth.PermSecrets, "prod", "demo", "") || !releaser.Can(auth.PermSecrets, "prod", "demo", "") {
		t.Fatal("secrets: not viewers or editors; releasers yes")
	}
	admin := &auth.Principal{Bindings: []auth.Binding{{Role: auth.Admin, Env: "*", App: "*", NS: "*"}}}
	if !admin.Can(auth.PermBroker, "", "", "") || !admin.Can(auth.PermSecrets, "prod", "demo", "") {
		t.Fatal("admin holds every permission")
	}
}
