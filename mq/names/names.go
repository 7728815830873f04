// Package names is the message queue's name service, after RocketMQ's
// NameServer: brokers register their topics and queues with heartbeats;
// producers and consumers ask where a topic lives and cache the answer.
// The table is in memory on each server and rebuilt by the brokers'
// heartbeats (every 10 s); a broker silent for TTL (default 30 s) is
// dropped from every route. Brokers register with every server, so the
// servers need not share anything.
package names

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/apirpc"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// Table is the name service.
type Table struct {
	ttl time.Duration
	now func() time.Time // time.Now; tests move a clock of their own
	mu  sync.RWMutex
	m   map[string]wire.BrokerInfo // by broker name + "/" + role
}

// Config configures a Table.
type Config struct {
	// TTL is how long a broker that stopped registering stays in routes
	// (default 30 s; brokers register every 10 s).
	TTL time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config { return Config{TTL: 30 * time.Second} }

// Validate checks c; it changes nothing.
func (c Config) Validate() error {
	if c.TTL < 0 {
		return fmt.Errorf("names: TTL %v is negative", c.TTL)
	}
	return nil
}

// New returns an empty table (a zero TTL takes the default).
func New(cfg Config) (*Table, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultConfig().TTL
	}
	return &Table{ttl: cfg.TTL, now: time.Now, m: map[string]wire.BrokerInfo{}}, nil
}

// Start, Shutdown and Close complete the component contract: the table has
// no background work (expiry is checked on each read), so they do nothing.
func (t *Table) Start(context.Context) error { return nil }

// Shutdown does nothing; see Start.
func (t *Table) Shutdown(context.Context) error { return nil }

// Close does nothing; see Start.
func (t *Table) Close() error { return nil }

// Register records a broker's heartbeat.
func (t *Table) Register(in wire.BrokerInfo) error {
	if err := wire.ValidName(in.Name, false); err != nil {
		return fmt.Errorf("broker %w", err)
	}
	if in.Addr == "" || len(in.Addr) > 256 {
		return fmt.Errorf("%w broker address %.60q", wire.ErrInvalid, in.Addr)
	}
	if in.Role != "master" && in.Role != "slave" {
		return fmt.Errorf("%w broker role %q (want master or slave)", wire.ErrInvalid, in.Role)
	}
	if len(in.Topics) > 100_000 {
		return fmt.Errorf("%w: %d topics in one registration", wire.ErrInvalid, len(in.Topics))
	}
	for _, tc := range in.Topics {
		if tc.Queues < 1 || tc.Queues > wire.MaxQueues {
			return fmt.Errorf("%w topic %q: %d queues", wire.ErrInvalid, tc.Name, tc.Queues)
		}
	}
	in.Seen = t.now().UnixMilli()
	t.mu.Lock()
	t.m[in.Name+"/"+in.Role] = in
	t.mu.Unlock()
	return nil
}

// live returns the brokers heard from within the TTL.
func (t *Table) live() []wire.BrokerInfo {
	cut := t.now().Add(-t.ttl).UnixMilli()
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := make([]wire.BrokerInfo, 0, len(t.m))
	for _, b := range t.m {
		if b.Seen >= cut {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b wire.BrokerInfo) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Role, b.Role)
	})
	return out
}

// Brokers lists the live brokers.
func (t *Table) Brokers() []wire.BrokerInfo { return t.live() }

// Route finds a topic's brokers. Masters are listed; a broker's slave is
// listed (role "slave") when its master is gone, so consumers keep
// reading. When no broker has the topic, Creator lists the masters that
// would create it on first send.
func (t *Table) Route(topic string) wire.RouteReply {
	rep := wire.RouteReply{Topic: topic}
	live := t.live()
	masters := map[string]bool{}
	for _, b := range live {
		if b.Role == "master" {
			masters[b.Name] = true
		}
	}
	for _, b := range live {
		if b.Role == "slave" && masters[b.Name] {
			continue
		}
		for _, tc := range b.Topics {
			if tc.Name == topic {
				rep.Queues = append(rep.Queues, wire.BrokerQueues{Broker: b.Name, Addr: b.Addr, Role: b.Role, Queues: tc.Queues})
			}
		}
		if b.Role == "master" && b.AutoCreate {
			rep.Creator = append(rep.Creator, wire.BrokerQueues{Broker: b.Name, Addr: b.Addr, Role: b.Role})
		}
	}
	if len(rep.Queues) > 0 {
		rep.Creator = nil
	}
	return rep
}

// Topics lists every topic with its brokers.
func (t *Table) Topics() map[string][]wire.BrokerQueues {
	out := map[string][]wire.BrokerQueues{}
	for _, b := range t.live() {
		for _, tc := range b.Topics {
			out[tc.Name] = append(out[tc.Name], wire.BrokerQueues{Broker: b.Name, Addr: b.Addr, Role: b.Role, Queues: tc.Queues})
		}
	}
	return out
}

func rpcError(err error) error {
	return apirpc.Error(err)
}

// RegisterRPC serves the name service: brokers register with the broker
// permission (the broker role, or admin); routes are readable by any
// authenticated caller.
func (t *Table) RegisterRPC(srv *rpc.Server) error {
	return errors.Join(
		rpc.Handle(srv, wire.MethodRegisterBroker, func(ctx context.Context, req *wire.BrokerInfo) (*wire.RouteReply, error) {
			if err := auth.Check(ctx, auth.PermBroker, "", "", ""); err != nil {
				return nil, rpcError(err)
			}
			return &wire.RouteReply{}, rpcError(t.Register(*req))
		}),
		rpc.Handle(srv, wire.MethodRoute, func(ctx context.Context, req *wire.RouteRequest) (*wire.RouteReply, error) {
			if err := wire.ValidTopic(req.Topic); err != nil {
				return nil, rpcError(err)
			}
			rep := t.Route(req.Topic)
			return &rep, nil
		}),
		rpc.Handle(srv, wire.MethodBrokers, func(ctx context.Context, req *wire.RouteRequest) (*wire.BrokersReply, error) {
			return &wire.BrokersReply{Brokers: t.Brokers()}, nil
		}),
	)
}
