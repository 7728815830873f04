package server_test

import (
	"context"
	"github.com/tangram-dev/tangram/mq/wire"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
)

// apiOf is an HTTP route each component mounts, and an RPC method it
// serves ("" for none).
var apiOf = map[string]struct{ path, method string }{
	server.CompConfig:   {"/api/v1/config/envs", ""},
	server.CompRegistry: {"/api/v1/registry/services", "tangram.Registry/Get"},
	server.CompJob:      {"/api/v1/jobs", "tangram.Job/Heartbeat"},
	server.CompMQ:       {"", wire.MethodBrokers},
	server.CompBroker:   {"", ""},
	server.CompKV:       {"", ""},
	server.CompTrace:    {"/api/v1/trace/stats", ""},
}

// TestComponentsStartAndStopTwice: every subset of components that
// --components can pick starts, serves exactly its own APIs, and stops
// with every goroutine ended — twice in a row on the same data directory.
func TestComponentsStartAndStopTwice(t *testing.T) {
	all := server.ComponentNames()
	// Every subset of the components, except that the trace collector —
	// which needs no other component and none needs it — is checked alone
	// and with all rather than in every combination (which would double
	// the 511 runs).
	mixed := slices.DeleteFunc(slices.Clone(all), func(n string) bool { return n == server.CompTrace })
	var subsets [][]string
	for mask := 1; mask < 1<<len(mixed); mask++ {
		var sub []string
		for i, n := range mixed {
			if mask&(1<<i) != 0 {
				sub = append(sub, n)
			}
		}
		subsets = append(subsets, sub)
	}
	subsets = append(subsets, []string{server.CompTrace}, all)
	if testing.Short() {
		subsets = [][]string{{server.CompConfig}, all}
	}
	for _, sub := range subsets {
		t.Run(strings.Join(sub, ","), func(t *testing.T) {
			if slices.Contains(sub, server.CompBroker) && !slices.Contains(sub, server.CompMQ) {
				_, err := server.New(server.Config{Components: sub, DataDir: t.TempDir()})
				if err == nil || !strings.Contains(err.Error(), "add mq") {
					t.Fatalf("broker without mq: want an error naming the fix, got %v", err)
				}
				return
			}
			dir := t.TempDir()
			for round := range 2 {
				h := servertest.Start(t, servertest.WithDataDir(dir), servertest.WithComponents(sub...))
				if got := h.Srv.Components(); !slices.Equal(got, sub) {
					t.Fatalf("round %d: running %v, want %v", round, got, sub)
				}
				checkAPIs(t, h, sub)
				if err := h.Srv.Close(); err != nil {
					t.Fatalf("round %d: close: %v", round, err)
				}
				if err := h.Srv.Start(context.Background()); err == nil {
					t.Fatalf("round %d: a closed server started again", round)
				}
				goleak.VerifyNone(t)
			}
		})
	}
	if _, err := server.New(server.Config{Components: []string{"config", "nope"}}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown component: want an error naming it, got %v", err)
	}
}

// checkAPIs checks that the server answers the HTTP route and RPC method of
// each running component and not those of the others.
func checkAPIs(t *testing.T, h *servertest.Harness, running []string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc, err := rpc.Dial(ctx, h.Srv.RPCAddr(), rpc.WithToken(h.Token))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	for name, api := range apiOf {
		on := slices.Contains(running, name)
		if api.path != "" {
			req, _ := http.NewRequest("GET", h.URL+api.path, nil)
			req.Header.Set("Authorization", "Bearer "+h.Token)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if on && resp.StatusCode != http.StatusOK || !on && resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s (running %v): GET %s = %d", name, on, api.path, resp.StatusCode)
			}
		}
		if api.method != "" {
			_, err := rpc.Call[struct{}](ctx, rc, api.method, &struct{}{})
			if unimpl := rpc.CodeOf(err) == rpc.Unimplemented; unimpl == on {
				t.Errorf("%s (running %v): %s answered %v", name, on, api.method, err)
			}
		}
	}
	if slices.Contains(running, server.CompBroker) != (h.Srv.Broker() != nil) {
		t.Errorf("broker running %v, Broker() = %v", slices.Contains(running, server.CompBroker), h.Srv.Broker())
	}
}
