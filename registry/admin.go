package registry

import (
	"context"
	"net/url"
	"strconv"
	"time"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apiclient"
)

// Admin is a typed client for the registry's HTTP API
// (/api/v1/registry): listing services, registering and draining
// instances by hand, long-poll watches and status. Programs that register
// themselves use Client (RPC, heartbeats, push); the CLI and tools use
// Admin. Errors are the API's, so errors.Is(err, ErrNotFound) works
// (docs/errors.md).
type Admin struct{ c *apiclient.Client }

// NewAdmin returns an admin client for the server at base (e.g.
// "http://127.0.0.1:7070") authenticating with an API token.
func NewAdmin(base, token string) *Admin { return &Admin{c: apiclient.New(base, token)} }

func servicePath(k Key) string {
	k.Fill()
	return "/api/v1/registry/services/" + url.PathEscape(k.Namespace) + "/" + url.PathEscape(k.Group) + "/" + url.PathEscape(k.Service)
}

func instancePath(k Key, id string) string {
	return servicePath(k) + "/instances/" + url.PathEscape(id)
}

// Services lists the services with instances, or one namespace's.
func (a *Admin) Services(ctx context.Context, namespace string) ([]ServiceInfo, error) {
	p := "/api/v1/registry/services"
	if namespace != "" {
		p += "?namespace=" + url.QueryEscape(namespace)
	}
	var out api.List[ServiceInfo]
	err := a.c.Do(ctx, "GET", p, nil, &out)
	return out.Items, err
}

// Service returns a service's instances.
func (a *Admin) Service(ctx context.Context, k Key) (Snapshot, error) {
	var out Snapshot
	err := a.c.Do(ctx, "GET", servicePath(k), nil, &out)
	return out, err
}

// Watch long-polls for changes after revision (0: the full list now),
// answering within timeout with what changed, or an unchanged snapshot.
func (a *Admin) Watch(ctx context.Context, k Key, revision int64, timeout time.Duration) (Snapshot, error) {
	var out Snapshot
	p := servicePath(k) + "/watch?timeout=" + url.QueryEscape(timeout.String()) + "&revision=" + strconv.FormatInt(revision, 10)
	err := a.c.Do(ctx, "GET", p, nil, &out)
	return out, err
}

// Register registers an instance (persistent instances need edit
// permission).
func (a *Admin) Register(ctx context.Context, in Instance) (Instance, error) {
	var out Instance
	err := a.c.Do(ctx, "POST", "/api/v1/registry/instances", in, &out)
	return out, err
}

// Heartbeat renews an ephemeral instance.
func (a *Admin) Heartbeat(ctx context.Context, k Key, id string) error {
	return a.c.Do(ctx, "PUT", instancePath(k, id)+"/heartbeat", nil, nil)
}

// Deregister removes an instance.
func (a *Admin) Deregister(ctx context.Context, k Key, id string) error {
	return a.c.Do(ctx, "DELETE", instancePath(k, id), nil, nil)
}

// Update changes an instance's weight or takes it out of (or back into)
// traffic.
func (a *Admin) Update(ctx context.Context, k Key, id string, p Patch) (Instance, error) {
	var out Instance
	err := a.c.Do(ctx, "PATCH", instancePath(k, id), p, &out)
	return out, err
}

// Status returns the answering server's counts and self-preservation
// state.
func (a *Admin) Status(ctx context.Context) (Status, error) {
	var out Status
	err := a.c.Do(ctx, "GET", "/api/v1/registry/status", nil, &out)
	return out, err
}
