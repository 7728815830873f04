package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/server/servertest"
)

// `tangram rpc call` against the platform's own RPC port: health without a
// token, WhoAmI with the --token flag, errors with their code.
func TestRPCCall(t *testing.T) {
	h := servertest.Start(t)
	addr := h.Srv.RPCAddr()
	out := run(t, h, "rpc", "call", addr, "tangram.Health/Check")
	if !strings.Contains(out, `"status": "ok"`) {
		t.Fatalf("health: %s", out)
	}
	out = run(t, h, "rpc", "call", addr, "tangram.Platform/WhoAmI", "{}")
	if !strings.Contains(out, `"name": "admin"`) {
		t.Fatalf("whoami: %s", out)
	}
	_, err := runErr(h, "rpc", "call", addr, "tangram.Nope/X", "{}")
	if err == nil || !strings.Contains(err.Error(), "Unimplemented") {
		t.Fatalf("unknown service: %v", err)
	}
	if _, err := runErr(h, "rpc", "call", addr, "tangram.Health/Check", "{not json"); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
		t.Fatalf("bad json: %v", err)
	}
}

func TestRPCGen(t *testing.T) {
	h := servertest.Start(t)
	dir := t.TempDir()
	src := "package svc\n\nimport \"context\"\n\ntype Req struct{}\ntype Resp struct{}\n\n" +
		"type Store interface {\n\tGet(ctx context.Context, r *Req) (*Resp, error)\n}\n"
	if err := os.WriteFile(filepath.Join(dir, "svc.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := run(t, h, "rpc", "gen", dir)
	if !strings.Contains(out, "store_rpc.go (Store)") {
		t.Fatalf("gen: %s", out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "store_rpc.go"))
	if err != nil || !strings.Contains(string(b), `rpc.Call[Resp](ctx, x.c, "Store/Get", req)`) {
		t.Fatalf("generated: %v\n%s", err, b)
	}
	if _, err := runErr(h, "rpc", "gen", dir, "--type", "Missing"); err == nil || !strings.Contains(err.Error(), "no interface Missing") {
		t.Fatalf("missing type: %v", err)
	}
}
