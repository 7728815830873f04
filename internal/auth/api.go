package auth

import (
	"net/http"
	"strconv"
	"time"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/audit"
)

// Register mounts the auth and audit API on mux under /api/v1/auth and
// /api/v1/audit. Handlers expect to run behind Require.
func (s *Service) Register(mux api.Mux, wrap func(http.Handler) http.Handler) {
	log := s.log.With("component", "auth")
	h := func(pattern string, fn api.HandlerFunc) {
		mux.Handle(pattern, wrap(api.Handler(log, fn)))
	}
	h("GET /api/v1/auth/whoami", func(w http.ResponseWriter, r *http.Request) error {
		api.WriteJSON(w, 200, FromContext(r.Context()))
		return nil
	})
	h("GET /api/v1/auth/users", func(w http.ResponseWriter, r *http.Request) error {
		if err := Check(r.Context(), PermAdmin, "", "", ""); err != nil {
			return err
		}
		us, err := s.ListUsers(r.Context())
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[User]{Items: us})
		return nil
	})
	h("POST /api/v1/auth/users", func(w http.ResponseWriter, r *http.Request) error {
		if err := Check(r.Context(), PermAdmin, "", "", ""); err != nil {
			return err
		}
		var req UserSpec
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		u, err := s.CreateUser(r.Context(), Actor(r.Context()), req)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 201, u)
		return nil
	})
	// A password change is the one way a credential could widen itself
	// (a scoped token setting the password a full session signs in with),
	// so ChangePassword asks for the current secret; see its comment.
	h("POST /api/v1/auth/users/{name}/password", func(w http.ResponseWriter, r *http.Request) error {
		var req PasswordChange
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		if err := s.ChangePassword(r.Context(), FromContext(r.Context()), r.PathValue("name"), req.Current, req.Password, RemoteHost(r)); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	able := func(disabled bool) api.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error {
			if err := Check(r.Context(), PermAdmin, "", "", ""); err != nil {
				return err
			}
			name := r.PathValue("name")
			if disabled && name == FromContext(r.Context()).Name {
				return api.BadRequest("you cannot disable yourself; ask another admin")
			}
			if err := s.SetDisabled(r.Context(), Actor(r.Context()), name, disabled); err != nil {
				return err
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
	}
	h("POST /api/v1/auth/users/{name}/disable", able(true))
	h("POST /api/v1/auth/users/{name}/enable", able(false))
	h("DELETE /api/v1/auth/users/{name}/sessions", func(w http.ResponseWriter, r *http.Request) error {
		name, p := r.PathValue("name"), FromContext(r.Context())
		keep := ""
		if p.Name == name && p.Session {
			keep = p.sessionID // "sign out my other sessions"
		}
		if p.Name != name || p.TokenEnv != "" {
			if err := Check(r.Context(), PermAdmin, "", "", ""); err != nil {
				return err
			}
		}
		n, err := s.EndSessions(r.Context(), Actor(r.Context()), name, keep)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, map[string]int64{"ended": n})
		return nil
	})
	grant := func(revoke bool) func(w http.ResponseWriter, r *http.Request) error {
		return func(w http.ResponseWriter, r *http.Request) error {
			if err := Check(r.Context(), PermAdmin, "", "", ""); err != nil {
				return err
			}
			var b Binding
			if err := api.Decode(r, &b); err != nil {
				return err
			}
			var err error
			if revoke {
				err = s.Revoke(r.Context(), Actor(r.Context()), r.PathValue("name"), b)
			} else {
				err = s.Grant(r.Context(), Actor(r.Context()), r.PathValue("name"), b)
			}
			if err != nil {
				return err
			}
			u, err := s.UserByName(r.Context(), r.PathValue("name"))
			if err != nil {
				return err
			}
			api.WriteJSON(w, 200, u)
			return nil
		}
	}
	h("POST /api/v1/auth/users/{name}/roles", grant(false))
	h("POST /api/v1/auth/users/{name}/roles/revoke", grant(true))
	h("GET /api/v1/auth/tokens", func(w http.ResponseWriter, r *http.Request) error {
		user := r.URL.Query().Get("user")
		p := FromContext(r.Context())
		if !p.IsAdmin() {
			user = p.Name
		}
		ts, err := s.ListTokens(r.Context(), user)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[Token]{Items: ts})
		return nil
	})
	h("POST /api/v1/auth/tokens", func(w http.ResponseWriter, r *http.Request) error {
		var req TokenSpec
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		p := FromContext(r.Context())
		if req.User == "" {
			req.User = p.Name
		}
		if req.User != p.Name || p.TokenEnv != "" {
			if err := Check(r.Context(), PermAdmin, "", "", ""); err != nil {
				return err
			}
		}
		var ttl time.Duration
		if req.TTL != "" {
			var err error
			if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
				return api.BadRequest("ttl %q: want a positive duration such as 24h or 720h", req.TTL)
			}
		}
		secret, t, err := s.CreateToken(r.Context(), Actor(r.Context()), req.User, req.Name, req.Env, ttl)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 201, CreatedToken{Token: secret, Info: t})
		return nil
	})
	h("DELETE /api/v1/auth/tokens/{id}", func(w http.ResponseWriter, r *http.Request) error {
		if err := Check(r.Context(), PermAdmin, "", "", ""); err != nil {
			return err
		}
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return api.BadRequest("token id %q is not a number", r.PathValue("id"))
		}
		if err := s.RevokeToken(r.Context(), Actor(r.Context()), id); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	h("GET /api/v1/audit", func(w http.ResponseWriter, r *http.Request) error {
		if err := Check(r.Context(), PermAdmin, "", "", ""); err != nil {
			return err
		}
		page, err := api.ReadPage(r, 100, 1000)
		if err != nil {
			return err
		}
		q := r.URL.Query()
		f := audit.Filter{Actor: q.Get("actor"), ActionPrefix: q.Get("action"), ResourcePrefix: q.Get("resource"), Before: page.Cursor, Limit: page.Limit}
		for k, dst := range map[string]*int64{"since": &f.Since, "until": &f.Until} {
			if v := q.Get(k); v != "" {
				t, err := time.Parse(time.RFC3339, v)
				if err != nil {
					return api.BadRequest("%s %q: want an RFC 3339 time", k, v)
				}
				*dst = t.UnixMilli()
			}
		}
		es, err := audit.List(r.Context(), s.st, f)
		if err != nil {
			return err
		}
		out := api.List[audit.Entry]{Items: es}
		if len(es) == page.Limit {
			out.NextCursor = strconv.FormatInt(es[len(es)-1].ID, 10)
		}
		api.WriteJSON(w, 200, out)
		return nil
	})
}
