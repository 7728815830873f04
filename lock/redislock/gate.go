package redislock

import (
	"context"
	"fmt"
	"sync"

	"github.com/tangram-dev/tangram/lock/lease"
)

// gates queue a Client's own contenders for one mutex before Redis: of
// the goroutines of one process that want the same lock, one at a time
// asks Redis, the others wait here in arrival order. A release then hands
// the lock to a local waiter without a stampede of retries on Redis, and
// a goroutine that unlocks and locks again at once cannot starve the
// others. Handles of one owner pass through each other's gate, as they
// share the lock's holds in Redis.
type gates struct {
	mu sync.Mutex
	m  map[string]*gate
}

type gate struct {
	token chan struct{} // holds one value while a handle is through
	owner string
	depth int // handles of owner through the gate
	refs  int // handles through or waiting
}

// enter passes the gate of name for owner, waiting for it unless try;
// it returns the function that leaves it (safe to call more than once).
func (g *gates) enter(ctx context.Context, name, owner string, try bool) (func(), error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*gate{}
	}
	gt := g.m[name]
	if gt == nil {
		gt = &gate{token: make(chan struct{}, 1)}
		g.m[name] = gt
	}
	gt.refs++
	if gt.depth > 0 && gt.owner == owner {
		gt.depth++
		g.mu.Unlock()
		return g.leaver(name, gt), nil
	}
	g.mu.Unlock()
	if try {
		select {
		case gt.token <- struct{}{}:
		default:
			g.drop(name, gt)
			return nil, fmt.Errorf("%w: %s (held in this process)", lease.ErrNotAcquired, name)
		}
	} else {
		select {
		case gt.token <- struct{}{}:
		case <-ctx.Done():
			g.drop(name, gt)
			return nil, fmt.Errorf("redislock: lock %s: %w", name, context.Cause(ctx))
		}
	}
	g.mu.Lock()
	gt.owner, gt.depth = owner, 1
	g.mu.Unlock()
	return g.leaver(name, gt), nil
}

func (g *gates) leaver(name string, gt *gate) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			gt.depth--
			if gt.depth == 0 {
				gt.owner = ""
				<-gt.token
			}
			g.mu.Unlock()
			g.drop(name, gt)
		})
	}
}

func (g *gates) drop(name string, gt *gate) {
	g.mu.Lock()
	defer g.mu.Unlock()
	gt.refs--
	if gt.refs == 0 && g.m[name] == gt {
		delete(g.m, name)
	}
}
