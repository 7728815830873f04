package console

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
)

// The users page: admins list users and their role bindings, create users,
// grant roles, disable users or end their sessions, and create (optionally
// expiring) and revoke API tokens.
func (c *Console) registerUsers(mux *http.ServeMux) {
	admin := func(fn func(w http.ResponseWriter, r *http.Request) error) http.Handler {
		return c.page(func(w http.ResponseWriter, r *http.Request) error {
			if err := auth.Check(r.Context(), auth.PermAdmin, "", "", ""); err != nil {
				return err
			}
			return fn(w, r)
		})
	}
	mux.Handle("GET /users", admin(c.usersPage))
	mux.Handle("POST /users", admin(func(w http.ResponseWriter, r *http.Request) error {
		b := bindingFrom(r)
		name := strings.TrimSpace(r.PostFormValue("name"))
		spec := auth.UserSpec{Name: name, Password: r.PostFormValue("password"), TokenOnly: r.PostFormValue("token_only") == "on", Bindings: []auth.Binding{b}}
		if _, err := c.cfg.Auth.CreateUser(r.Context(), auth.Actor(r.Context()), spec); err != nil {
			return err
		}
		c.back(w, r, "user "+name+" created", "")
		return nil
	}))
	mux.Handle("POST /users/{name}/grant", admin(func(w http.ResponseWriter, r *http.Request) error {
		if err := c.cfg.Auth.Grant(r.Context(), auth.Actor(r.Context()), r.PathValue("name"), bindingFrom(r)); err != nil {
			return err
		}
		c.back(w, r, "role granted to "+r.PathValue("name"), "")
		return nil
	}))
	able := func(disabled bool) http.Handler {
		return admin(func(w http.ResponseWriter, r *http.Request) error {
			name := r.PathValue("name")
			if disabled && name == auth.Actor(r.Context()) {
				return api.BadRequest("you cannot disable yourself; ask another admin")
			}
			if err := c.cfg.Auth.SetDisabled(r.Context(), auth.Actor(r.Context()), name, disabled); err != nil {
				return err
			}
			verb := "enabled"
			if disabled {
				verb = "disabled; their sessions ended"
			}
			c.back(w, r, "user "+name+" "+verb, "")
			return nil
		})
	}
	mux.Handle("POST /users/{name}/disable", able(true))
	mux.Handle("POST /users/{name}/enable", able(false))
	mux.Handle("POST /users/{name}/password", admin(func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("name")
		if err := c.cfg.Auth.ChangePassword(r.Context(), auth.FromContext(r.Context()), name, r.PostFormValue("current"), r.PostFormValue("password"), auth.RemoteHost(r)); err != nil {
			return err
		}
		c.back(w, r, "password of "+name+" set; their other sessions ended", "")
		return nil
	}))
	mux.Handle("POST /users/{name}/signout", admin(func(w http.ResponseWriter, r *http.Request) error {
		n, err := c.cfg.Auth.EndSessions(r.Context(), auth.Actor(r.Context()), r.PathValue("name"), "")
		if err != nil {
			return err
		}
		c.back(w, r, fmt.Sprintf("%d session(s) of %s ended", n, r.PathValue("name")), "")
		return nil
	}))
	mux.Handle("POST /tokens", admin(func(w http.ResponseWriter, r *http.Request) error {
		user, name := strings.TrimSpace(r.PostFormValue("user")), strings.TrimSpace(r.PostFormValue("name"))
		var ttl time.Duration
		if v := strings.TrimSpace(r.PostFormValue("ttl")); v != "" {
			var err error
			if ttl, err = time.ParseDuration(v); err != nil || ttl <= 0 {
				return api.BadRequest("expiry %q: want a duration such as 24h or 720h", v)
			}
		}
		secret, _, err := c.cfg.Auth.CreateToken(r.Context(), auth.Actor(r.Context()), user, name, strings.TrimSpace(r.PostFormValue("env")), ttl)
		if err != nil {
			return err
		}
		// Shown once, on the page this post renders (not in a URL).
		return c.renderUsers(w, r, user, secret)
	}))
	mux.Handle("POST /tokens/{id}/revoke", admin(func(w http.ResponseWriter, r *http.Request) error {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return api.BadRequest("token id %q is not a number", r.PathValue("id"))
		}
		if err := c.cfg.Auth.RevokeToken(r.Context(), auth.Actor(r.Context()), id); err != nil {
			return api.NotFound("%v", err)
		}
		c.back(w, r, "token "+r.PathValue("id")+" revoked", "")
		return nil
	}))
}

func bindingFrom(r *http.Request) auth.Binding {
	return auth.Binding{Role: auth.Role(r.PostFormValue("role")), Env: strings.TrimSpace(r.PostFormValue("env")),
		App: strings.TrimSpace(r.PostFormValue("app")), NS: strings.TrimSpace(r.PostFormValue("ns"))}
}

func (c *Console) usersPage(w http.ResponseWriter, r *http.Request) error {
	return c.renderUsers(w, r, "", "")
}

func (c *Console) renderUsers(w http.ResponseWriter, r *http.Request, tokenUser, token string) error {
	users, err := c.cfg.Auth.ListUsers(r.Context())
	if err != nil {
		return err
	}
	tokens, err := c.cfg.Auth.ListTokens(r.Context(), "")
	if err != nil {
		return err
	}
	c.render(w, r, "users", "Users", map[string]any{"Users": users, "Tokens": tokens, "NewToken": token, "NewTokenUser": tokenUser,
		"Roles": auth.Roles(), "Now": time.Now()})
	return nil
}
