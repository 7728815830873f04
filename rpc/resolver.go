package rpc

import (
	"context"
	"fmt"
	"net"
	"strings"
)

// Address is one server a Resolver reports.
type Address struct {
	Addr   string            // host:port
	Weight int               // 1–10000; 0 means 100
	Zone   string            // for zone-preferring balancing
	Meta   map[string]string // free-form instance metadata
}

// Resolver supplies the endpoints of a client. Watch calls update with the
// full list now and again after every change, until ctx ends, and returns
// then. The registry's discovery client implements it; Static is the fixed
// list a target like "host:port,host:port" means.
type Resolver interface {
	Watch(ctx context.Context, update func([]Address)) error
}

// Static returns a resolver for a fixed list of addresses.
func Static(addrs ...Address) Resolver { return staticResolver(addrs) }

type staticResolver []Address

func (s staticResolver) Watch(ctx context.Context, update func([]Address)) error {
	update(append([]Address(nil), s...))
	<-ctx.Done()
	return nil
}

// parseTarget parses "host:port[,host:port…]".
func parseTarget(target string) ([]Address, error) {
	var out []Address
	for _, a := range strings.Split(target, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("rpc: target %q: %w", a, err)
		}
		out = append(out, Address{Addr: a})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("rpc: empty target %q: want host:port[,host:port…] or a resolver", target)
	}
	return out, nil
}
