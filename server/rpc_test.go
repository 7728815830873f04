package server_test

import (
	"context"
	"testing"

	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
)

// The platform's RPC port: health answers anyone; everything else needs an
// API token, checked against the same store as the HTTP API.
func TestPlatformRPC(t *testing.T) {
	h := servertest.Start(t)
	ctx := context.Background()
	c, err := rpc.Dial(ctx, h.Srv.RPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hr, err := rpc.Call[server.HealthReply](ctx, c, "tangram.Health/Check", &server.Empty{})
	if err != nil || hr.Status != "ok" || hr.Version != server.Version {
		t.Fatalf("health: %+v %v", hr, err)
	}
	if _, err := rpc.Call[server.WhoAmIReply](ctx, c, "tangram.Platform/WhoAmI", &server.Empty{}); rpc.CodeOf(err) != rpc.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	bad := rpc.WithOutgoing(ctx, rpc.MetaAuthorization, "Bearer tgm_nope")
	if _, err := rpc.Call[server.WhoAmIReply](bad, c, "tangram.Platform/WhoAmI", &server.Empty{}); rpc.CodeOf(err) != rpc.Unauthenticated {
		t.Fatalf("bad token: %v", err)
	}
	good := rpc.WithOutgoing(ctx, rpc.MetaAuthorization, "Bearer "+h.Token)
	w, err := rpc.Call[server.WhoAmIReply](good, c, "tangram.Platform/WhoAmI", &server.Empty{})
	if err != nil || w.Name != "admin" || !w.Admin {
		t.Fatalf("whoami: %+v %v", w, err)
	}
}
