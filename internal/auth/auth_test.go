package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/store/storetest"
)

func TestCan(t *testing.T) {
	p := &auth.Principal{Name: "u", Bindings: []auth.Binding{
		{Role: auth.Releaser, Env: "dev", App: "demo", NS: "*"},
		{Role: auth.Viewer, Env: "*", App: "*", NS: "*"},
		{Role: auth.Editor, Env: "prod", App: "demo", NS: "application"},
	}}
	cases := []struct {
		perm         auth.Perm
		env, app, ns string
		want         bool
	}{
		{auth.PermRelease, "dev", "demo", "x", true},
		{auth.PermRelease, "prod", "demo", "application", false},
		{auth.PermEdit, "prod", "demo", "application", true},
		{auth.PermEdit, "prod", "demo", "other", false},
		{auth.PermRead, "prod", "other", "x", true},
		{auth.PermEdit, "test", "demo", "x", false},
		{auth.PermAdmin, "", "", "", false},
	}
	for _, tc := range cases {
		if got := p.Can(tc.perm, tc.env, tc.app, tc.ns); got != tc.want {
			t.Errorf("Can(%s, %s/%s/%s) = %v want %v", tc.perm, tc.env, tc.app, tc.ns, got, tc.want)
		}
	}
	// A token limited to dev grants nothing in prod, even to an admin.
	admin := &auth.Principal{Bindings: []auth.Binding{{Role: auth.Admin, Env: "*", App: "*", NS: "*"}}, TokenEnv: "dev"}
	if admin.Can(auth.PermRead, "prod", "demo", "") || !admin.Can(auth.PermRelease, "dev", "demo", "") || admin.IsAdmin() {
		t.Fatal("environment-limited token")
	}
	var nilP *auth.Principal
	if nilP.Can(auth.PermRead, "", "", "") {
		t.Fatal("nil principal can read")
	}
}

func TestPasswords(t *testing.T) {
	h, err := auth.HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !auth.CheckPassword(h, "correct horse") || auth.CheckPassword(h, "wrong horse") {
		t.Fatal("password check")
	}
	for _, bad := range []string{"", "x", "pbkdf2-sha256$0$a$b", "pbkdf2-sha256$10$!!$!!"} {
		if auth.CheckPassword(bad, "x") {
			t.Errorf("accepted stored hash %q", bad)
		}
	}
}

func TestServiceTokensSessions(t *testing.T) {
	ctx := context.Background()
	st := storetest.Open(t, "sqlite")
	s := auth.New(st, nil)
	tok, err := s.Bootstrap(ctx, "")
	if err != nil || tok == "" {
		t.Fatalf("bootstrap: %q %v", tok, err)
	}
	if again, err := s.Bootstrap(ctx, ""); err != nil || again != "" {
		t.Fatalf("second bootstrap printed a token: %q %v", again, err)
	}
	// A later start with TANGRAM_BOOTSTRAP_TOKEN adds that token to admin
	// (the way back in after losing the first one).
	if printed, err := s.Bootstrap(ctx, "tgm_recovery-token-0123456789"); err != nil || printed != "" {
		t.Fatalf("recovery bootstrap: %q %v", printed, err)
	}
	if rp, err := s.AuthenticateToken(ctx, "tgm_recovery-token-0123456789"); err != nil || !rp.IsAdmin() {
		t.Fatalf("recovery token: %+v %v", rp, err)
	}
	p, err := s.AuthenticateToken(ctx, tok)
	if err != nil || !p.IsAdmin() || p.Name != "admin" {
		t.Fatalf("admin token: %+v %v", p, err)
	}
	if _, err := s.AuthenticateToken(ctx, tok+"x"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("wrong token: %v", err)
	}
	var stored string
	if err := st.QueryRowContext(ctx, `SELECT hash FROM api_tokens ORDER BY id LIMIT 1`).Scan(&stored); err != nil || stored == tok || stored != auth.HashToken(tok) {
		t.Fatalf("token stored as %q", stored)
	}
	if _, err := s.CreateUser(ctx, "admin", auth.UserSpec{Name: "bob", Password: "short"}); err == nil {
		t.Fatal("short password accepted")
	}
	if _, err := s.CreateUser(ctx, "admin", auth.UserSpec{Name: "bob", Password: "long enough pw", Bindings: []auth.Binding{{Role: "owner"}}}); !errors.Is(err, auth.ErrBadRole) {
		t.Fatalf("bad role: %v", err)
	}
	if _, err := s.CreateUser(ctx, "admin", auth.UserSpec{Name: "bob", Password: "long enough pw", Bindings: []auth.Binding{{Role: auth.Editor, App: "demo"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(ctx, "admin", auth.UserSpec{Name: "bob", TokenOnly: true}); !errors.Is(err, auth.ErrUserExists) {
		t.Fatalf("duplicate user: %v", err)
	}
	if _, err := s.CreateUser(ctx, "admin", auth.UserSpec{Name: "carl", TokenOnly: true, Bindings: []auth.Binding{{Role: auth.Viewer, Env: "no spaces"}}}); !errors.Is(err, auth.ErrBadName) {
		t.Fatalf("bad binding env: %v", err)
	}
	if _, _, err := s.CreateToken(ctx, "admin", "bob", "long", strings.Repeat("e", 300), 0); !errors.Is(err, auth.ErrBadName) {
		t.Fatalf("bad token env: %v", err)
	}
	secret, info, err := s.CreateToken(ctx, "admin", "bob", "ci", "dev", 0)
	if err != nil {
		t.Fatal(err)
	}
	bp, err := s.AuthenticateToken(ctx, secret)
	if err != nil || bp.TokenEnv != "dev" || !bp.Can(auth.PermEdit, "dev", "demo", "x") || bp.Can(auth.PermEdit, "prod", "demo", "x") {
		t.Fatalf("bob's token: %+v %v", bp, err)
	}
	if err := s.RevokeToken(ctx, "admin", info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateToken(ctx, secret); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("revoked token still works: %v", err)
	}
	// Sessions: password or token login; wrong secrets refused.
	sid, csrf, err := s.Login(ctx, "bob", "long enough pw", "127.0.0.1")
	if err != nil || sid == "" || csrf == "" {
		t.Fatalf("login: %v", err)
	}
	sp, err := s.AuthenticateSession(ctx, sid)
	if err != nil || sp.Name != "bob" || sp.CSRF != csrf {
		t.Fatalf("session: %+v %v", sp, err)
	}
	if _, _, err := s.Login(ctx, "bob", "wrong", ""); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, err := s.Login(ctx, "admin", tok, ""); err != nil {
		t.Fatalf("login with token: %v", err)
	}
	// Failed sign-ins are limited per address and name; a success resets.
	for i := 0; i < 5; i++ {
		if _, _, err := s.Login(ctx, "bob", "wrong", "10.0.0.9"); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if _, _, err := s.Login(ctx, "bob", "long enough pw", "10.0.0.9"); !errors.Is(err, auth.ErrTooManyAttempts) {
		t.Fatalf("sixth attempt: %v", err)
	}
	if _, _, err := s.Login(ctx, "bob", "long enough pw", "10.0.0.10"); err != nil {
		t.Fatalf("other address: %v", err)
	}
	if _, _, err := s.Login(ctx, "nobody", "x", "10.0.0.11"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("unknown user: %v", err)
	}
	if err := s.Logout(ctx, sid); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AuthenticateSession(ctx, sid); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("session after logout: %v", err)
	}
}
