package idgen

import (
	"context"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apiclient"
)

// Admin is a typed client for the id component's HTTP API (/api/v1/id):
// IDs of a tag, the tags, the server's buffers and the leased worker
// numbers. Programs that issue many IDs use Client's Segments (RPC, a
// local double buffer); the CLI and tools use Admin.
type Admin struct{ c *apiclient.Client }

// NewAdmin returns an admin client for the server at base (e.g.
// "http://127.0.0.1:7070") authenticating with an API token.
func NewAdmin(base, token string) *Admin { return &Admin{c: apiclient.New(base, token)} }

// Next returns count IDs of tag from the server's buffers.
func (a *Admin) Next(ctx context.Context, tag string, count int) ([]int64, error) {
	var out NextReply
	err := a.c.Do(ctx, "POST", "/api/v1/id/next", NextRequest{Tag: tag, Count: count}, &out)
	return out.IDs, err
}

// Tags lists the segment tags.
func (a *Admin) Tags(ctx context.Context) ([]Tag, error) {
	var out api.List[Tag]
	err := a.c.Do(ctx, "GET", "/api/v1/id/tags", nil, &out)
	return out.Items, err
}

// SaveTag creates a tag or changes its step and description.
func (a *Admin) SaveTag(ctx context.Context, req TagRequest) (Tag, error) {
	var out Tag
	err := a.c.Do(ctx, "POST", "/api/v1/id/tags", req, &out)
	return out, err
}

// Buffers lists the server's double buffers per tag.
func (a *Admin) Buffers(ctx context.Context) ([]State, error) {
	var out api.List[State]
	err := a.c.Do(ctx, "GET", "/api/v1/id/buffers", nil, &out)
	return out.Items, err
}

// Workers lists the leased worker numbers.
func (a *Admin) Workers(ctx context.Context) ([]WorkerLease, error) {
	var out api.List[WorkerLease]
	err := a.c.Do(ctx, "GET", "/api/v1/id/workers", nil, &out)
	return out.Items, err
}
