package console

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
)

// The users page: admins list users and their role bindings, create users,
// grant roles, and create and revoke API tokens.
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
		if _, err := c.cfg.Auth.CreateUser(r.Context(), auth.Actor(r.Context()), name, r.PostFormValue("password"), []auth.Binding{b}); err != nil {
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
	mux.Handle("POST /tokens", admin(func(w http.ResponseWriter, r *http.Request) error {
		user, name := strings.TrimSpace(r.PostFormValue("user")), strings.TrimSpace(r.PostFormValue("name"))
		secret, _, err := c.cfg.Auth.CreateToken(r.Context(), auth.Actor(r.Context()), user, name, strings.TrimSpace(r.PostFormValue("env")))
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
	c.render(w, r, "users", "Users", map[string]any{"Users": users, "Tokens": tokens, "NewToken": token, "NewTokenUser": tokenUser})
	return nil
}
