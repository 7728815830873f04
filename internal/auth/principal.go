package auth

import (
	"context"
	"fmt"
	"strconv"
)

// Role is a named set of permissions.
type Role string

// Perm is one permission.
type Perm int

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
	case PermSecrets:
		return "secrets"
	case PermBroker:
		return "broker"
	}
	return "perm(" + strconv.Itoa(int(p)) + ")"
}

// grants reports whether the role holds perm. viewer < editor < releaser
// < admin form a ladder; client (an application's own credential) reads
// and may fetch secrets in clear; broker may only run an MQ broker
// (register with the name service, replicate) and holds nothing else.
func (r Role) grants(p Perm) bool {
	switch r {
	case Viewer:
		return p == PermRead
	case ClientRole:
		return p == PermRead || p == PermSecrets
	case Editor:
		return p == PermRead || p == PermEdit
	case Releaser:
		return p == PermRead || p == PermEdit || p == PermRelease || p == PermSecrets
	case Admin:
		return true
	case BrokerRole:
		return p == PermBroker
	}
	return false
}

// Roles lists every role, weakest first within the ladder, then the two
// narrow roles.
func Roles() []Role { return []Role{Viewer, Editor, Releaser, Admin, ClientRole, BrokerRole} }

// ParseRole validates a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles() {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("%w %q (want viewer, editor, releaser, admin, client or broker)", ErrBadRole, s)
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
	Session   bool   `json:"-"`
	CSRF      string `json:"-"`
	sessionID string
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
		if b.Role.grants(perm) && b.covers(env, app, ns) {
			return true
		}
	}
	return false
}

// IsAdmin reports whether p is an unrestricted admin.
func (p *Principal) IsAdmin() bool { return p.Can(PermAdmin, "", "", "") && p.TokenEnv == "" }

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
