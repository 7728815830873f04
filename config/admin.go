package config

import (
	"context"
	"fmt"
	"net/url"
	"strconv"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apiclient"
)

// Admin is a typed client for the config center's admin API
// (/api/v1/config): environments, apps, clusters, namespaces, drafts,
// releases, gray releases and approvals. The CLI and the examples use it;
// errors are the API's, so errors.Is(err, ErrNotFound) works (docs/errors.md).
type Admin struct{ c *apiclient.Client }

// NewAdmin returns an admin client for the server at base (e.g.
// "http://127.0.0.1:7070") authenticating with an API token.
func NewAdmin(base, token string) *Admin { return &Admin{c: apiclient.New(base, token)} }

const adminBase = "/api/v1/config"

func nsPath(c Coord) string {
	return adminBase + "/envs/" + url.PathEscape(c.Env) + "/apps/" + url.PathEscape(c.App) + "/clusters/" + url.PathEscape(c.Cluster) + "/namespaces/" + url.PathEscape(c.NS)
}

func clustersPath(env, app string) string {
	return adminBase + "/envs/" + url.PathEscape(env) + "/apps/" + url.PathEscape(app) + "/clusters"
}

// NamespaceView is a namespace with its draft items and the changes not yet
// published.
type NamespaceView struct {
	Namespace Namespace `json:"namespace"`
	Items     []Item    `json:"items"`
	Pending   []Change  `json:"pending"`
}

// DraftVersion is the answer to a draft edit.
type DraftVersion struct {
	DraftVersion int64 `json:"draft_version"`
	// Items is how many items an import brought in.
	Items int64 `json:"items,omitempty"`
}

// ItemEdit sets one key in a draft.
type ItemEdit struct {
	Value   string `json:"value"`
	Secret  bool   `json:"secret"`
	Comment string `json:"comment"`
	// Version, when set, fails the edit with ErrConflict unless the draft
	// is at this version.
	Version *int64 `json:"version,omitempty"`
}

// ImportRequest replaces (or, with Merge, updates) a draft from a file.
type ImportRequest struct {
	Format string `json:"format"` // properties, yaml or json; empty: the namespace's
	Data   string `json:"data"`
	Merge  bool   `json:"merge"`
}

// ExportOptions choose what Export writes.
type ExportOptions struct {
	Format string // properties, yaml or json (properties namespaces only)
	Draft  bool   // the draft instead of the current release
	Reveal bool   // secrets in plaintext (needs edit permission)
}

// Envs lists the environments.
func (a *Admin) Envs(ctx context.Context) ([]Env, error) {
	var out api.List[Env]
	err := a.c.Do(ctx, "GET", adminBase+"/envs", nil, &out)
	return out.Items, err
}

// CreateEnv creates an environment (admin).
func (a *Admin) CreateEnv(ctx context.Context, e Env) (Env, error) {
	var out Env
	err := a.c.Do(ctx, "POST", adminBase+"/envs", e, &out)
	return out, err
}

// UpdateEnv replaces an environment's description and switches (admin).
func (a *Admin) UpdateEnv(ctx context.Context, e Env) (Env, error) {
	var out Env
	err := a.c.Do(ctx, "PUT", adminBase+"/envs/"+url.PathEscape(e.Name), e, &out)
	return out, err
}

// Apps lists the apps the caller may read.
func (a *Admin) Apps(ctx context.Context) ([]App, error) {
	var out api.List[App]
	err := a.c.Do(ctx, "GET", adminBase+"/apps", nil, &out)
	return out.Items, err
}

// CreateApp creates an app with an "application" namespace in every
// environment.
func (a *Admin) CreateApp(ctx context.Context, app App) (App, error) {
	var out App
	err := a.c.Do(ctx, "POST", adminBase+"/apps", app, &out)
	return out, err
}

// CreateCluster creates a cluster of an app in an environment.
func (a *Admin) CreateCluster(ctx context.Context, env, app, name string) error {
	return a.c.Do(ctx, "POST", clustersPath(env, app), map[string]string{"name": name}, nil)
}

// Clusters lists an app's clusters in an environment.
func (a *Admin) Clusters(ctx context.Context, env, app string) ([]string, error) {
	var out api.List[string]
	err := a.c.Do(ctx, "GET", clustersPath(env, app), nil, &out)
	return out.Items, err
}

// CreateNamespace creates a namespace (or links a public one) in a cluster.
func (a *Admin) CreateNamespace(ctx context.Context, env, app, cluster string, spec NamespaceSpec) (Namespace, error) {
	var out Namespace
	err := a.c.Do(ctx, "POST", clustersPath(env, app)+"/"+url.PathEscape(cluster)+"/namespaces", spec, &out)
	return out, err
}

// Namespaces lists a cluster's namespaces.
func (a *Admin) Namespaces(ctx context.Context, env, app, cluster string) ([]Namespace, error) {
	var out api.List[Namespace]
	err := a.c.Do(ctx, "GET", clustersPath(env, app)+"/"+url.PathEscape(cluster)+"/namespaces", nil, &out)
	return out.Items, err
}

// Namespace returns a namespace with its draft and unpublished changes.
func (a *Admin) Namespace(ctx context.Context, c Coord) (NamespaceView, error) {
	var out NamespaceView
	err := a.c.Do(ctx, "GET", nsPath(c), nil, &out)
	return out, err
}

// UpdateSettings changes a namespace's release rules (admin).
func (a *Admin) UpdateSettings(ctx context.Context, c Coord, s Settings) (Namespace, error) {
	var out Namespace
	err := a.c.Do(ctx, "PATCH", nsPath(c), s, &out)
	return out, err
}

// Item reads one key of the current release (secrets masked), or of the
// draft.
func (a *Admin) Item(ctx context.Context, c Coord, key string, draft bool) (Item, error) {
	p := nsPath(c) + "/items/" + url.PathEscape(key)
	if draft {
		p += "?source=draft"
	}
	var out Item
	err := a.c.Do(ctx, "GET", p, nil, &out)
	return out, err
}

// SetItem sets a key in the draft and returns the draft's new version.
func (a *Admin) SetItem(ctx context.Context, c Coord, key string, e ItemEdit) (int64, error) {
	var out DraftVersion
	err := a.c.Do(ctx, "PUT", nsPath(c)+"/items/"+url.PathEscape(key), e, &out)
	return out.DraftVersion, err
}

// DeleteItem deletes a key from the draft and returns the draft's new
// version.
func (a *Admin) DeleteItem(ctx context.Context, c Coord, key string) (int64, error) {
	var out DraftVersion
	err := a.c.Do(ctx, "DELETE", nsPath(c)+"/items/"+url.PathEscape(key), nil, &out)
	return out.DraftVersion, err
}

// EditDraft applies several sets and deletes to the draft at once.
func (a *Admin) EditDraft(ctx context.Context, c Coord, e Edit) (int64, error) {
	var out DraftVersion
	err := a.c.Do(ctx, "POST", nsPath(c)+"/draft", e, &out)
	return out.DraftVersion, err
}

// Import loads a file into the draft.
func (a *Admin) Import(ctx context.Context, c Coord, req ImportRequest) (DraftVersion, error) {
	var out DraftVersion
	err := a.c.Do(ctx, "POST", nsPath(c)+"/import", req, &out)
	return out, err
}

// Export writes the current release (or draft) as a file.
func (a *Admin) Export(ctx context.Context, c Coord, o ExportOptions) (string, error) {
	q := url.Values{}
	if o.Format != "" {
		q.Set("format", o.Format)
	}
	if o.Draft {
		q.Set("source", "draft")
	}
	if o.Reveal {
		q.Set("reveal", "true")
	}
	var out string
	err := a.c.Do(ctx, "GET", nsPath(c)+"/export?"+q.Encode(), nil, &out)
	return out, err
}

// Instances lists the clients that fetched the namespace recently.
func (a *Admin) Instances(ctx context.Context, c Coord) ([]Instance, error) {
	var out api.List[Instance]
	err := a.c.Do(ctx, "GET", nsPath(c)+"/instances", nil, &out)
	return out.Items, err
}

// Publish releases the draft.
func (a *Admin) Publish(ctx context.Context, c Coord, req PublishRequest) (Release, error) {
	var out Release
	err := a.c.Do(ctx, "POST", nsPath(c)+"/publish", req, &out)
	return out, err
}

// Rollback releases an earlier release's content again.
func (a *Admin) Rollback(ctx context.Context, c Coord, req RollbackRequest) (Release, error) {
	var out Release
	err := a.c.Do(ctx, "POST", nsPath(c)+"/rollback", req, &out)
	return out, err
}

// Releases lists the newest releases first.
func (a *Admin) Releases(ctx context.Context, c Coord, limit int) ([]Release, error) {
	var out api.List[Release]
	err := a.c.Do(ctx, "GET", nsPath(c)+"/releases?limit="+strconv.Itoa(limit), nil, &out)
	return out.Items, err
}

// Release returns one release with its items.
func (a *Admin) Release(ctx context.Context, c Coord, id int64) (Release, error) {
	var out Release
	err := a.c.Do(ctx, "GET", fmt.Sprintf("%s/releases/%d", nsPath(c), id), nil, &out)
	return out, err
}

// Diff compares two releases; from and to are release ids, "current" or
// "draft".
func (a *Admin) Diff(ctx context.Context, c Coord, from, to string) ([]Change, error) {
	var out api.List[Change]
	err := a.c.Do(ctx, "GET", nsPath(c)+"/diff?from="+url.QueryEscape(from)+"&to="+url.QueryEscape(to), nil, &out)
	return out.Items, err
}

// RequestRelease opens a publish request for review.
func (a *Admin) RequestRelease(ctx context.Context, c Coord, comment string) (ReleaseRequest, error) {
	var out ReleaseRequest
	err := a.c.Do(ctx, "POST", nsPath(c)+"/requests", map[string]string{"comment": comment}, &out)
	return out, err
}

// Requests lists publish requests with a status (pending, approved,
// rejected, cancelled; empty for all).
func (a *Admin) Requests(ctx context.Context, c Coord, status string) ([]ReleaseRequest, error) {
	var out api.List[ReleaseRequest]
	err := a.c.Do(ctx, "GET", nsPath(c)+"/requests?status="+url.QueryEscape(status), nil, &out)
	return out.Items, err
}

// Approve approves a request and publishes it.
func (a *Admin) Approve(ctx context.Context, c Coord, id int64, d Decision) (Release, error) {
	var out Release
	err := a.c.Do(ctx, "POST", fmt.Sprintf("%s/requests/%d/approve", nsPath(c), id), d, &out)
	return out, err
}

// Reject rejects a request (a reviewer).
func (a *Admin) Reject(ctx context.Context, c Coord, id int64, d Decision) error {
	return a.c.Do(ctx, "POST", fmt.Sprintf("%s/requests/%d/reject", nsPath(c), id), d, nil)
}

// Cancel withdraws a request (its author).
func (a *Admin) Cancel(ctx context.Context, c Coord, id int64, d Decision) error {
	return a.c.Do(ctx, "POST", fmt.Sprintf("%s/requests/%d/cancel", nsPath(c), id), d, nil)
}

// Gray returns the namespace's gray release, if one is open.
func (a *Admin) Gray(ctx context.Context, c Coord) (Gray, error) {
	var out Gray
	err := a.c.Do(ctx, "GET", nsPath(c)+"/gray", nil, &out)
	return out, err
}

// EditGray changes the gray overlay or its rules.
func (a *Admin) EditGray(ctx context.Context, c Coord, e GrayEdit) (Gray, error) {
	var out Gray
	err := a.c.Do(ctx, "POST", nsPath(c)+"/gray", e, &out)
	return out, err
}

// PublishGray releases the overlay to the instances the rules select.
func (a *Admin) PublishGray(ctx context.Context, c Coord, req PublishRequest) (Release, error) {
	var out Release
	err := a.c.Do(ctx, "POST", nsPath(c)+"/gray/publish", req, &out)
	return out, err
}

// PromoteGray releases the overlay to every instance and closes the gray.
func (a *Admin) PromoteGray(ctx context.Context, c Coord, req PublishRequest) (Release, error) {
	var out Release
	err := a.c.Do(ctx, "POST", nsPath(c)+"/gray/promote", req, &out)
	return out, err
}

// AbandonGray drops the gray release; gray instances go back to the main
// release.
func (a *Admin) AbandonGray(ctx context.Context, c Coord) error {
	return a.c.Do(ctx, "POST", nsPath(c)+"/gray/abandon", nil, nil)
}

// Served reads a namespace as a client does (secrets in plaintext; read
// permission).
func (a *Admin) Served(ctx context.Context, c Coord) (Payload, error) {
	var out Payload
	err := a.c.Do(ctx, "GET", adminBase+"/configs/"+url.PathEscape(c.Env)+"/"+url.PathEscape(c.App)+"/"+url.PathEscape(c.Cluster)+"/"+url.PathEscape(c.NS), nil, &out)
	return out, err
}
