package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/server/servertest"
)

// TestMQCommands runs the README tour's message queue commands against a
// server with its in-process broker.
func TestMQCommands(t *testing.T) {
	h := servertest.Start(t)
	rpcFlag := []string{"--rpc-server", h.Srv.RPCAddr()}
	mqRun := func(args ...string) string {
		t.Helper()
		return run(t, h, append(append([]string{"mq"}, args...), rpcFlag...)...)
	}
	if out := mqRun("topic", "create", "orders", "--queues", "4"); !strings.Contains(out, "topic orders: 4 queues") {
		t.Fatalf("create: %s", out)
	}
	out := mqRun("send", "orders", `{"id":1}`, "--key", "order-1", "--tag", "paid", "-o", "json")
	var sent map[string]any
	if err := json.Unmarshal([]byte(out), &sent); err != nil || sent["ID"] == "" {
		t.Fatalf("send: %v %s", err, out)
	}
	mqRun("send", "orders", "second", "--count", "3")
	if out := mqRun("topic", "list"); !strings.Contains(out, "orders") || !strings.Contains(out, "4") {
		t.Fatalf("list: %s", out)
	}
	if out := mqRun("consume", "orders", "--group", "billing", "--count", "4"); strings.Count(out, "\n") != 4 || !strings.Contains(out, `{"id":1}`) {
		t.Fatalf("consume: %q", out)
	}
	// The consumer committed as it closed: no lag left.
	if out := mqRun("group", "lag", "billing"); !strings.Contains(out, "total") || !strings.HasSuffix(strings.TrimSpace(out), "0") {
		t.Fatalf("lag: %s", out)
	}
	if out := mqRun("lookup", "--topic", "orders", "--key", "order-1"); !strings.Contains(out, `{"id":1}`) || !strings.Contains(out, "paid") {
		t.Fatalf("lookup: %s", out)
	}
	id, _ := sent["ID"].(string)
	if out := mqRun("lookup", "--id", id); !strings.Contains(out, `{"id":1}`) {
		t.Fatalf("lookup by id: %s", out)
	}
	mqRun("group", "reset-offset", "billing", "--topic", "orders", "--to", "start")
	if out := mqRun("group", "lag", "billing"); !strings.HasSuffix(strings.TrimSpace(out), "4") {
		t.Fatalf("lag after reset: %s", out)
	}
	if out := mqRun("dlq", "list", "billing"); !strings.Contains(out, "ID") {
		t.Fatalf("dlq list: %s", out)
	}
	// Every mutation is audited, the broker's too.
	audit := run(t, h, "auth", "audit", "-o", "json")
	for _, want := range []string{`"mq.topic.create"`, `"topic/orders"`, `"mq.group.reset"`, `"group/billing"`} {
		if !strings.Contains(audit, want) {
			t.Fatalf("the audit log lacks %s:\n%s", want, audit)
		}
	}
	if out := mqRun("brokers"); !strings.Contains(out, "master") {
		t.Fatalf("brokers: %s", out)
	}
	// Bad input is named.
	if _, err := runErr(h, append([]string{"mq", "topic", "create", "bad/name"}, rpcFlag...)...); err == nil || !strings.Contains(err.Error(), "name") {
		t.Fatalf("bad topic: %v", err)
	}
	if _, err := runErr(h, append([]string{"mq", "consume", "orders"}, rpcFlag...)...); err == nil || !strings.Contains(err.Error(), "--group") {
		t.Fatalf("consume without group: %v", err)
	}
	mqRun("topic", "delete", "orders")
}
