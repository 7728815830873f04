package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runShard(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var buf bytes.Buffer
	root.SetOut(&buf)
	root.SetErr(&buf)
	root.SetArgs(append([]string{"shard"}, args...))
	err := root.Execute()
	return buf.String(), err
}

func TestShardCheckAndRoute(t *testing.T) {
	rules := filepath.Join("..", "..", "examples", "shard", "sharding.yaml")
	out, err := runShard(t, "check", rules)
	if err != nil || !strings.Contains(out, "ds_1.t_order_item_3") {
		t.Fatalf("check: %v\n%s", err, out)
	}
	out, err = runShard(t, "route", rules, "UPDATE t_order SET amount = ? WHERE order_id = ?", "--arg", "5", "--arg", "6", "-o", "json")
	if err != nil || strings.Count(out, `"data_source"`) != 2 || !strings.Contains(out, "t_order_2") {
		t.Fatalf("route: %v\n%s", err, out)
	}
	if _, err := runShard(t, "route", rules, "SELECT * FROM t_order HAVING"); err == nil {
		t.Error("a statement that does not parse routed")
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("dataSources:\n  ds_0: mysql://r@h:1/d\ntables:\n  t: {actualDataNodes: ds_9.t}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runShard(t, "check", bad); err == nil || !strings.Contains(err.Error(), "line 4") {
		t.Errorf("bad rules: %v", err)
	}
}
