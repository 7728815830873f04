// Package mq is the message queue's client: producers (sync, async and
// oneway sends, batches, ordered sends by key, transactional messages,
// delays) and consumers (groups in clustering or broadcasting mode,
// concurrent or ordered consumption, retries through the group's retry
// topic and a dead-letter topic after the last). Clients find brokers
// through the name service in `tangram server` and talk to them over
// Tangram RPC; see docs/mq.md.
package mq

import (
	oteltrace "go.opentelemetry.io/otel/trace"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// Config configures a Client.
type Config struct {
	// Servers lists the Tangram servers' RPC addresses (the name service),
	// "host:port". Required.
	Servers []string
	// Token is the API token sent to servers and brokers.
	Token string
	// RouteRefresh is how often cached routes are refreshed (default 30 s;
	// a failed send refreshes its topic at once).
	RouteRefresh time.Duration
	// DialOptions are added to every RPC connection.
	DialOptions []rpc.DialOption
	Logger      *slog.Logger
	// TracerProvider records a producer span per send and a consumer span
	// per message handled (the consumer's a child of the producer's, and
	// linked to it, across the broker). Nil records none; the caller's
	// trace context still travels in the messages either way.
	TracerProvider oteltrace.TracerProvider
}

// Client holds the connections to the name service and the brokers and a
// cache of routes; producers and consumers share one.
type Client struct {
	cfg   Config
	log   *slog.Logger
	names *rpc.Client
	id    string
	// tracer is nil when no TracerProvider is set.
	tracer oteltrace.Tracer

	mu      sync.Mutex
	brokers map[string]*rpc.Client // by address
	routes  map[string]*route

	stop   chan struct{}
	wg     sync.WaitGroup
	closed bool
}

// route is a topic's cached route.
type route struct {
	queues  []queueRef // every (broker, queue) of the topic, ordered
	creator []wire.BrokerQueues
	fetched time.Time
}

// queueRef names one queue of a topic.
type queueRef struct {
	Broker string
	Addr   string
	Role   string
	Queue  uint32
}

func (q queueRef) String() string { return q.Broker + "/" + strconv.FormatUint(uint64(q.Queue), 10) }

// NewClient connects to the name service.
func NewClient(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("mq: Config.Servers is required")
	}
	if cfg.RouteRefresh <= 0 {
		cfg.RouteRefresh = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Client{cfg: cfg, log: cfg.Logger, tracer: tracerOf(cfg.TracerProvider), brokers: map[string]*rpc.Client{}, routes: map[string]*route{}, stop: make(chan struct{})}
	var err error
	if c.names, err = rpc.Dial(ctx, strings.Join(cfg.Servers, ","), c.dialOpts()...); err != nil {
		return nil, fmt.Errorf("mq: name service: %w", err)
	}
	host, _ := os.Hostname()
	var r [4]byte
	_, _ = rand.Read(r[:])
	c.id = fmt.Sprintf("%s@%d@%s", host, os.Getpid(), hex.EncodeToString(r[:]))
	return c, nil
}

func (c *Client) dialOpts() []rpc.DialOption {
	opts := []rpc.DialOption{rpc.WithLogger(c.log), rpc.WithMaxFrameSize(96 << 20)}
	if c.cfg.Token != "" {
		opts = append(opts, rpc.WithToken(c.cfg.Token))
	}
	return append(opts, c.cfg.DialOptions...)
}

// ID is this client's identity in consumer groups.
func (c *Client) ID() string { return c.id }

// Close closes the connections.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	bs := c.brokers
	c.brokers = map[string]*rpc.Client{}
	c.mu.Unlock()
	close(c.stop)
	c.wg.Wait()
	for _, b := range bs {
		b.Close()
	}
	return c.names.Close()
}

// broker returns the connection to a broker.
func (c *Client) broker(ctx context.Context, addr string) (*rpc.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("mq: client closed")
	}
	if b := c.brokers[addr]; b != nil {
		return b, nil
	}
	b, err := rpc.Dial(ctx, addr, append(c.dialOpts(), rpc.WithConns(2))...)
	if err != nil {
		return nil, fmt.Errorf("mq: broker %s: %w", addr, err)
	}
	c.brokers[addr] = b
	return b, nil
}

// Route returns a topic's queues, from the cache when fresh.
func (c *Client) route(ctx context.Context, topic string, refresh bool) (*route, error) {
	c.mu.Lock()
	r := c.routes[topic]
	c.mu.Unlock()
	// A route without queues (a topic not created yet, or not registered
	// yet) is asked again after a second rather than RouteRefresh.
	if r != nil && !refresh && time.Since(r.fetched) < c.cfg.RouteRefresh && (len(r.queues) > 0 || time.Since(r.fetched) < time.Second) {
		return r, nil
	}
	rep, err := rpc.Call[wire.RouteReply](ctx, c.names, wire.MethodRoute, &wire.RouteRequest{Topic: topic}, rpc.Idempotent())
	if err != nil {
		if r != nil {
			c.log.Warn("mq: refreshing a route failed; using the cached one", "topic", topic, "err", err)
			return r, nil
		}
		return nil, fmt.Errorf("mq: route of %q: %w", topic, err)
	}
	nr := &route{creator: rep.Creator, fetched: time.Now()}
	for _, bq := range rep.Queues {
		for q := 0; q < bq.Queues; q++ {
			nr.queues = append(nr.queues, queueRef{Broker: bq.Broker, Addr: bq.Addr, Role: bq.Role, Queue: uint32(q)})
		}
	}
	c.mu.Lock()
	c.routes[topic] = nr
	c.mu.Unlock()
	return nr, nil
}

// Brokers lists the brokers the name service knows.
func (c *Client) Brokers(ctx context.Context) ([]wire.BrokerInfo, error) {
	rep, err := rpc.Call[wire.BrokersReply](ctx, c.names, wire.MethodBrokers, &wire.RouteRequest{}, rpc.Idempotent())
	if err != nil {
		return nil, fmt.Errorf("mq: brokers: %w", err)
	}
	return rep.Brokers, nil
}

// brokerFor finds a broker's address by name (for message IDs).
func (c *Client) brokerFor(ctx context.Context, name string) (string, error) {
	bs, err := c.Brokers(ctx)
	if err != nil {
		return "", err
	}
	for _, b := range bs {
		if b.Name == name && b.Role == "master" {
			return b.Addr, nil
		}
	}
	for _, b := range bs {
		if b.Name == name {
			return b.Addr, nil
		}
	}
	return "", fmt.Errorf("mq: broker %q is not registered", name)
}

// newMsgID makes a producer message ID: 16 random bytes in hex.
func newMsgID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// retriable reports whether a failed send may go to another broker.
func retriable(err error) bool {
	if rpc.NotSent(err) {
		return true
	}
	switch rpc.CodeOf(err) {
	case rpc.Unavailable, rpc.ResourceExhausted, rpc.NotFound:
		return true
	}
	return false
}
