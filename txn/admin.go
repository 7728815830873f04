package txn

import (
	"context"
	"net/url"
	"strconv"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apiclient"
)

// Admin is a typed client for the coordinator's HTTP API (/api/v1/txn):
// list and inspect transactions, retry or abort them. Services use Client
// (RPC); the CLI and tools use Admin.
type Admin struct{ c *apiclient.Client }

// NewAdmin returns an admin client for the server at base (e.g.
// "http://127.0.0.1:7070") authenticating with an API token.
func NewAdmin(base, token string) *Admin { return &Admin{c: apiclient.New(base, token)} }

// List returns a page of transactions, newest first.
func (a *Admin) List(ctx context.Context, req ListRequest) (ListReply, error) {
	q := url.Values{}
	for k, v := range map[string]string{"status": string(req.Status), "mode": string(req.Mode), "app": req.App, "cursor": req.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if req.Limit > 0 {
		q.Set("limit", strconv.Itoa(req.Limit))
	}
	var out api.List[Global]
	err := a.c.Do(ctx, "GET", "/api/v1/txn/transactions?"+q.Encode(), nil, &out)
	return ListReply{Items: out.Items, Next: out.NextCursor}, err
}

// Get returns a transaction with its branches and timeline.
func (a *Admin) Get(ctx context.Context, xid string) (Global, error) {
	var out Global
	err := a.c.Do(ctx, "GET", "/api/v1/txn/transactions/"+url.PathEscape(xid), nil, &out)
	return out, err
}

// Retry resumes a transaction parked as failed, or retries a pending one
// now; with wait it returns when phase two has ended.
func (a *Admin) Retry(ctx context.Context, xid string, wait bool) (Global, error) {
	var out Global
	err := a.c.Do(ctx, "POST", "/api/v1/txn/transactions/"+url.PathEscape(xid)+"/retry", XIDRequest{Wait: wait, WaitMs: waitMs(ctx)}, &out)
	return out, err
}

// Abort rolls back a prepared transaction or a saga parked as failed.
func (a *Admin) Abort(ctx context.Context, xid, reason string, wait bool) (Global, error) {
	var out Global
	err := a.c.Do(ctx, "POST", "/api/v1/txn/transactions/"+url.PathEscape(xid)+"/abort", XIDRequest{Reason: reason, Wait: wait, WaitMs: waitMs(ctx)}, &out)
	return out, err
}
