package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/server/servertest"
)

func TestRegistryCLI(t *testing.T) {
	h := servertest.Start(t)
	out := run(t, h, "registry", "register", "billing", "--host", "127.0.0.1", "--port", "9", "--persistent", "--zone", "az1", "--meta", "v=2")
	if !strings.Contains(out, "registered 127.0.0.1:9 in public/default/billing") {
		t.Fatalf("register: %s", out)
	}
	if out := run(t, h, "registry", "list"); !strings.Contains(out, "billing") {
		t.Fatalf("list: %s", out)
	}
	out = run(t, h, "registry", "get", "billing")
	if !strings.Contains(out, "127.0.0.1:9") || !strings.Contains(out, "persistent") || !strings.Contains(out, "v=2") {
		t.Fatalf("get: %s", out)
	}
	out = run(t, h, "registry", "drain", "billing", "127.0.0.1:9", "-o", "json")
	var in struct{ Enabled bool }
	if err := json.Unmarshal([]byte(out), &in); err != nil || in.Enabled {
		t.Fatalf("drain: %v %s", err, out)
	}
	if out := run(t, h, "registry", "watch", "billing", "--count", "1"); !strings.Contains(out, "1 instances") || !strings.Contains(out, "enabled=false") {
		t.Fatalf("watch: %s", out)
	}
	if _, err := runErr(h, "registry", "register", "billing", "--host", "127.0.0.1", "--port", "0"); err == nil || !strings.Contains(err.Error(), "port 0") {
		t.Fatalf("bad port: %v", err)
	}
	run(t, h, "registry", "deregister", "billing", "127.0.0.1:9")
	if out := run(t, h, "registry", "status", "-o", "json"); !strings.Contains(out, `"instances": 0`) {
		t.Fatalf("status: %s", out)
	}
}
