package idgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/tangram-dev/tangram/rpc"
)

// ClientConfig configures a Client of the ID service (the id component of
// tangram server).
type ClientConfig struct {
	// Servers are tangram server RPC addresses (required).
	Servers []string
	// Token is an API token with edit permission.
	Token string
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// DialOptions are passed to rpc.Dial.
	DialOptions []rpc.DialOption
}

// Client talks to the ID service: ranges for local segment allocators,
// IDs served by the server, and leased worker numbers for snowflake
// generators.
type Client struct {
	cfg ClientConfig
	rpc *rpc.Client

	nqMu sync.Mutex
	nq   map[string]*nextQueue // Next's queue per tag
}

// Dial connects to the ID service.
func Dial(ctx context.Context, cfg ClientConfig) (*Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("idgen: ClientConfig.Servers is empty")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	opts := append([]rpc.DialOption{rpc.WithLogger(cfg.Logger)}, cfg.DialOptions...)
	if cfg.Token != "" {
		opts = append(opts, rpc.WithToken(cfg.Token))
	}
	cl, err := rpc.Dial(ctx, strings.Join(cfg.Servers, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("idgen: dial: %w", err)
	}
	return &Client{cfg: cfg, rpc: cl}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.rpc.Close() }

// Segment takes the next range of tag (step 0: the tag's step). It is a
// SegmentSource.
func (c *Client) Segment(ctx context.Context, tag string, step int64) (Segment, error) {
	sg, err := rpc.Call[Segment](ctx, c.rpc, MethodSegment, &SegmentRequest{Tag: tag, Step: step})
	if err != nil {
		return Segment{}, fmt.Errorf("idgen: segment of %s: %w", tag, err)
	}
	return *sg, nil
}

// Segments returns a local allocator drawing ranges from the server: the
// fast path (no network per ID). Close it before the Client.
func (c *Client) Segments() *Segments {
	s, _ := NewSegments(SegmentConfig{Source: c.Segment, Logger: c.cfg.Logger})
	return s
}

// Next asks the server for count IDs of tag (from the server's own
// buffers: one round trip per call; Segments is faster).
func (c *Client) Next(ctx context.Context, tag string, count int) ([]int64, error) {
	if count == 0 {
		count = 1
	}
	if count > 0 && count <= MaxNext {
		return c.next(ctx, tag, count) // coalesced with concurrent calls of tag (coalesce.go)
	}
	rep, err := rpc.Call[NextReply](ctx, c.rpc, MethodNext, &NextRequest{Tag: tag, Count: count})
	if err != nil {
		return nil, fmt.Errorf("idgen: next of %s: %w", tag, err)
	}
	return rep.IDs, nil
}

func defaultHolder() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s/%d", h, os.Getpid())
}
