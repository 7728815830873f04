package auth

import (
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/internal/audit"
)

// APIRoutes documents the users, tokens and audit API (docs/openapi.yaml).
func APIRoutes() []apidoc.Route {
	t := "auth"
	u := "/api/v1/auth/users/{name}"
	return []apidoc.Route{
		{Method: "GET", Path: "/api/v1/auth/whoami", Tag: t, Summary: "The caller's principal", Response: Principal{}},
		{Method: "GET", Path: "/api/v1/auth/users", Tag: t, Summary: "List users (admin)", Response: api.List[User]{}},
		{Method: "POST", Path: "/api/v1/auth/users", Tag: t, Summary: "Create a user: a password of 8+ characters, or token_only (admin)", Body: UserSpec{}, Status: 201, Response: User{}, Also: []int{409}},
		{Method: "POST", Path: u + "/password", Tag: t, Summary: "Change a password: one's own needs current; an unrestricted admin sets another's without it; other sessions end", Body: PasswordChange{}, Status: 204, Also: []int{429}},
		{Method: "POST", Path: u + "/disable", Tag: t, Summary: "Disable a user: tokens stop, sessions end (admin)", Status: 204},
		{Method: "POST", Path: u + "/enable", Tag: t, Summary: "Enable a disabled user (admin)", Status: 204},
		{Method: "DELETE", Path: u + "/sessions", Tag: t, Summary: "End a user's console sessions (admin; or one's own other sessions)", Response: map[string]int64{}},
		{Method: "POST", Path: u + "/roles", Tag: t, Summary: "Grant a role binding (admin)", Body: Binding{}, Response: User{}},
		{Method: "POST", Path: u + "/roles/revoke", Tag: t, Summary: "Revoke a role binding (admin)", Body: Binding{}, Response: User{}},
		{Method: "GET", Path: "/api/v1/auth/tokens", Tag: t, Summary: "List API tokens (one's own; all for an admin, or ?user=)", Query: []apidoc.Param{apidoc.Q("user", "only this user's (admin)")}, Response: api.List[Token]{}},
		{Method: "POST", Path: "/api/v1/auth/tokens", Tag: t, Summary: "Create an API token, shown once (env limits it; ttl makes it expire)", Body: TokenSpec{}, Status: 201, Response: CreatedToken{}},
		{Method: "DELETE", Path: "/api/v1/auth/tokens/{id}", Tag: t, Summary: "Revoke an API token (admin)", Status: 204},
		{Method: "GET", Path: "/api/v1/audit", Tag: t, Summary: "The audit log, newest first (admin)", Query: []apidoc.Param{apidoc.Q("actor", ""), apidoc.Q("action", "action prefix"), apidoc.Q("resource", "resource prefix"), apidoc.Q("since", "RFC 3339: entries at or after"), apidoc.Q("until", "RFC 3339: entries before"), {Name: "limit", Type: "integer"}, apidoc.Q("cursor", "next_cursor of the previous page")}, Response: api.List[audit.Entry]{}},
	}
}
