package rpc

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/rpc/balance"
)

// chanResolver pushes whatever lists the test sends it.
type chanResolver struct{ ch chan []Address }

func (r chanResolver) Watch(ctx context.Context, update func([]Address)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case a := <-r.ch:
			update(a)
		}
	}
}

func TestResolverUpdates(t *testing.T) {
	_, a1 := testServer(t, Config{})
	_, a2 := testServer(t, Config{})
	r := chanResolver{ch: make(chan []Address)}
	var c *Client
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c = dial(t, "", WithResolver(r), WithBalancer(balance.RoundRobin()), WithConns(3))
	}()
	r.ch <- []Address{{Addr: a1}}
	wg.Wait()
	peers := func() map[string]int {
		m := map[string]int{}
		for range 12 {
			resp, err := Call[echoResp](context.Background(), c, "Echo/Echo", &echoReq{})
			must(t, err)
			m[resp.Peer]++
		}
		return m
	}
	if m := peers(); m[a1] != 12 {
		t.Fatalf("%v", m)
	}
	r.ch <- []Address{{Addr: a1}, {Addr: a2}}
	wait.For(t, 5*time.Second, "the condition", func() bool { return len(c.Endpoints()) == 2 })
	if m := peers(); m[a1] != 6 || m[a2] != 6 {
		t.Fatalf("%v", m)
	}
	r.ch <- []Address{{Addr: a2}}
	wait.For(t, 5*time.Second, "the condition", func() bool { return len(c.Endpoints()) == 1 })
	if m := peers(); m[a2] != 12 {
		t.Fatalf("%v", m)
	}
	// Three connection slots were used on the endpoint (round robin over slots).
	c.mu.Lock()
	ep := c.endpoints[a2]
	c.mu.Unlock()
	wait.For(t, 5*time.Second, "the condition", func() bool { return len(ep.snapshot()) == 3 })
	r.ch <- nil
	wait.For(t, 5*time.Second, "the condition", func() bool { return len(c.Endpoints()) == 0 })
	if _, err := Call[echoResp](context.Background(), c, "Echo/Echo", &echoReq{}); CodeOf(err) != Unavailable {
		t.Fatalf("no endpoints: %v", err)
	}
}

type failingResolver struct{}

func (failingResolver) Watch(ctx context.Context, update func([]Address)) error {
	return errors.New("registry unreachable")
}

// A resolver that fails before its first list fails Dial at once, with its
// error, instead of leaving Dial waiting on a context without a deadline.
func TestDialResolverFails(t *testing.T) {
	_, err := Dial(context.Background(), "", WithResolver(failingResolver{}), WithLogger(quietLogger()))
	if err == nil || !strings.Contains(err.Error(), "registry unreachable") {
		t.Fatalf("got %v", err)
	}
}

// After Close, async calls complete with ErrClientClosed instead of hanging.
func TestAsyncAfterClose(t *testing.T) {
	_, addr := testServer(t, Config{})
	c := dial(t, addr)
	c.Close()
	if _, err := Go[echoResp](context.Background(), c, "Echo/Echo", &echoReq{}).Wait(); CodeOf(err) != Canceled {
		t.Fatalf("Go after Close: %v", err)
	}
	if _, err := Call[echoResp](context.Background(), c, "Echo/Echo", &echoReq{}); CodeOf(err) != Canceled {
		t.Fatalf("Call after Close: %v", err)
	}
}
