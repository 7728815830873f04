package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/audit"
)

// SessionCookie is the console session cookie's name.
const SessionCookie = "tangram_session"

// CSRFHeader carries the CSRF token on console API calls; forms send the
// field "csrf" instead.
const CSRFHeader = "X-CSRF-Token"

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the authenticated caller, or nil.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}

// Bearer extracts a bearer token from the Authorization header.
func Bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// Authenticate resolves the caller of r from a bearer token or a console
// session cookie. For sessions, state-changing methods must carry the
// session's CSRF token (header or form field), which a cross-site page
// cannot read.
func (s *Service) Authenticate(r *http.Request) (*Principal, error) {
	if tok := Bearer(r); tok != "" {
		return s.AuthenticateToken(r.Context(), tok)
	}
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return nil, ErrUnauthenticated
	}
	p, err := s.AuthenticateSession(r.Context(), c.Value)
	if err != nil {
		return nil, err
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		got := r.Header.Get(CSRFHeader)
		if got == "" {
			got = r.PostFormValue("csrf")
		}
		if subtle.ConstantTimeCompare([]byte(got), []byte(p.CSRF)) != 1 {
			return nil, errCSRF
		}
	}
	return p, nil
}

var errCSRF = errors.New("auth: missing or wrong CSRF token")

// Require wraps an API handler: requests without valid credentials get 401
// in the API error envelope.
func (s *Service) Require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.Authenticate(r)
		if err != nil {
			switch {
			case errors.Is(err, errCSRF):
				api.WriteError(w, api.Forbidden("missing or wrong CSRF token"))
			case errors.Is(err, ErrUnauthenticated):
				w.Header().Set("WWW-Authenticate", `Bearer realm="tangram"`)
				api.WriteError(w, api.Unauthorized("a valid API token (Authorization: Bearer …) or console session is required"))
			default:
				s.log.Error("authenticate", "err", err)
				api.WriteError(w, err)
			}
			return
		}
		ctx := audit.WithRemote(WithPrincipal(r.Context(), p), RemoteHost(r))
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// RemoteHost is the address a request came from, for audit entries and
// sign-in limits.
func RemoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// Check returns a 403 API error unless the caller holds perm on the scope.
func Check(ctx context.Context, perm Perm, env, app, ns string) error {
	p := FromContext(ctx)
	if p == nil {
		return api.Unauthorized("not authenticated")
	}
	if !p.Can(perm, env, app, ns) {
		scope := strings.Trim(strings.Join([]string{env, app, ns}, "/"), "/")
		if scope == "" {
			scope = "*"
		}
		return api.Forbidden("%s lacks %s permission on %s", p.Name, perm, scope)
	}
	return nil
}

// Actor names the caller for audit entries.
func Actor(ctx context.Context) string {
	if p := FromContext(ctx); p != nil {
		return p.Name
	}
	return "anonymous"
}
