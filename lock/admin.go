package lock

import (
	"context"
	"net/url"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apiclient"
)

// Admin is a typed client for the lock component's HTTP API
// (/api/v1/lock): the locks with their holders and queues, nodes, and
// sessions (listing, ending one by hand). Programs that take locks use
// Client (RPC, a session kept alive); the CLI and tools use Admin.
type Admin struct{ c *apiclient.Client }

// NewAdmin returns an admin client for the server at base (e.g.
// "http://127.0.0.1:7070") authenticating with an API token.
func NewAdmin(base, token string) *Admin { return &Admin{c: apiclient.New(base, token)} }

// Locks lists the locks the caller may read.
func (a *Admin) Locks(ctx context.Context) ([]LockInfo, error) {
	var out api.List[LockInfo]
	err := a.c.Do(ctx, "GET", "/api/v1/lock/locks", nil, &out)
	return out.Items, err
}

// Nodes lists the children of path.
func (a *Admin) Nodes(ctx context.Context, path string) ([]Node, error) {
	var out api.List[Node]
	err := a.c.Do(ctx, "GET", "/api/v1/lock/nodes?path="+url.QueryEscape(path), nil, &out)
	return out.Items, err
}

// Sessions lists the live sessions (an admin sees all; others their own).
func (a *Admin) Sessions(ctx context.Context) ([]Session, error) {
	var out api.List[Session]
	err := a.c.Do(ctx, "GET", "/api/v1/lock/sessions", nil, &out)
	return out.Items, err
}

// EndSession ends a session now: its ephemeral nodes are deleted and the
// locks it held pass on.
func (a *Admin) EndSession(ctx context.Context, id string) error {
	return a.c.Do(ctx, "DELETE", "/api/v1/lock/sessions/"+url.PathEscape(id), nil, nil)
}
