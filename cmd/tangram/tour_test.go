package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/server/servertest"
)

func run(t *testing.T, h *servertest.Harness, args ...string) string {
	t.Helper()
	out, err := runErr(h, args...)
	if err != nil {
		t.Fatalf("tangram %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func runErr(h *servertest.Harness, args ...string) (string, error) {
	root := newRoot()
	var buf bytes.Buffer
	root.SetOut(&buf)
	root.SetErr(&buf)
	root.SetArgs(append([]string{"--server", h.URL, "--token", h.Token}, args...))
	err := root.Execute()
	return buf.String(), err
}

// TestTour runs the README's tour, command for command.
func TestTour(t *testing.T) {
	h := servertest.Start(t)
	run(t, h, "config", "create-app", "demo")
	run(t, h, "config", "set", "--env", "dev", "--app", "demo", "--ns", "application", "greeting", "hello")
	run(t, h, "config", "publish", "--env", "dev", "--app", "demo", "--ns", "application", "-m", "first")
	if got := run(t, h, "config", "get", "--env", "dev", "--app", "demo", "--ns", "application", "greeting"); got != "hello\n" {
		t.Fatalf("get after first publish: %q", got)
	}
	run(t, h, "config", "set", "--env", "dev", "--app", "demo", "--ns", "application", "greeting", "hi")
	run(t, h, "config", "publish", "--env", "dev", "--app", "demo", "--ns", "application", "-m", "second")
	if got := run(t, h, "config", "get", "--env", "dev", "--app", "demo", "greeting"); got != "hi\n" {
		t.Fatalf("get after second publish: %q", got)
	}
	run(t, h, "config", "rollback", "--env", "dev", "--app", "demo", "--ns", "application")
	if got := run(t, h, "config", "get", "--env", "dev", "--app", "demo", "--ns", "application", "greeting"); got != "hello\n" {
		t.Fatalf("get after rollback: %q", got)
	}
	hist := run(t, h, "config", "history", "--env", "dev", "--app", "demo", "-o", "json")
	var rels []map[string]any
	if err := json.Unmarshal([]byte(hist), &rels); err != nil || len(rels) != 3 || rels[0]["kind"] != "rollback" {
		t.Fatalf("history json: %v %s", err, hist)
	}
	if y := run(t, h, "config", "history", "--env", "dev", "--app", "demo", "-o", "yaml"); !strings.Contains(y, "kind: rollback") {
		t.Fatalf("history yaml: %s", y)
	}

	// Gray through the CLI.
	run(t, h, "config", "gray", "set", "--env", "dev", "--app", "demo", "greeting", "gray-hello")
	run(t, h, "config", "gray", "rules", "--env", "dev", "--app", "demo", "--label", "canary")
	run(t, h, "config", "gray", "publish", "--env", "dev", "--app", "demo")
	show := run(t, h, "config", "gray", "show", "--env", "dev", "--app", "demo")
	if !strings.Contains(show, "published as release") || !strings.Contains(show, "canary") {
		t.Fatalf("gray show: %s", show)
	}
	run(t, h, "config", "gray", "abandon", "--env", "dev", "--app", "demo")

	// Import/export and diff.
	dir := t.TempDir()
	f := filepath.Join(dir, "app.properties")
	os.WriteFile(f, []byte("a=1\nb=2\n"), 0o600)
	run(t, h, "config", "import", "--env", "dev", "--app", "demo", "--merge", f)
	if d := run(t, h, "config", "diff", "--env", "dev", "--app", "demo"); !strings.Contains(d, "added") {
		t.Fatalf("diff: %s", d)
	}
	run(t, h, "config", "publish", "--env", "dev", "--app", "demo", "-m", "imported")
	exp := run(t, h, "config", "export", "--env", "dev", "--app", "demo")
	if !strings.Contains(exp, "a = 1") || !strings.Contains(exp, "greeting = hello") {
		t.Fatalf("export: %s", exp)
	}

	// Approvals and auth from the CLI.
	run(t, h, "auth", "create-user", "bob", "--token-only", "--role", "releaser:dev:demo")
	tok := strings.TrimSpace(run(t, h, "auth", "create-token", "ci", "--user", "bob"))
	if !strings.HasPrefix(tok, "tgm_") {
		t.Fatalf("token: %q", tok)
	}
	if out := run(t, h, "auth", "create-token", "short", "--user", "bob", "--ttl", "1h"); !strings.HasPrefix(out, "tgm_") {
		t.Fatalf("expiring token: %q", out)
	}
	if out := run(t, h, "auth", "tokens"); !strings.Contains(out, "EXPIRES") || !strings.Contains(out, "never") {
		t.Fatalf("tokens lack expiry: %s", out)
	}
	if out, err := runErr(h, "auth", "create-token", "typo", "--user", "bob", "--env", "prdo"); err == nil || !strings.Contains(err.Error(), "\"prdo\" is not an environment") {
		t.Fatalf("token for a missing environment: %v %s", err, out)
	}
	run(t, h, "config", "settings", "--env", "dev", "--app", "demo", "--require-approval")
	run(t, h, "config", "set", "--env", "dev", "--app", "demo", "greeting", "approved")
	if out, err := runErr(h, "config", "publish", "--env", "dev", "--app", "demo"); err == nil || !strings.Contains(err.Error(), "approv") {
		t.Fatalf("publish without approval: %v %s", err, out)
	}
	run(t, h, "config", "request", "--env", "dev", "--app", "demo", "-m", "please")
	bob := &servertest.Harness{URL: h.URL, Token: tok}
	run(t, bob, "config", "approve", "1", "--env", "dev", "--app", "demo")
	if got := run(t, h, "config", "get", "--env", "dev", "--app", "demo", "greeting"); got != "approved\n" {
		t.Fatalf("after approval: %q", got)
	}
	if a := run(t, h, "auth", "audit", "--action", "config.request"); !strings.Contains(a, "config.request.approve") {
		t.Fatalf("audit: %s", a)
	}
	// Environments: create one, switch emergency publish off.
	run(t, h, "config", "create-env", "staging")
	if out := run(t, h, "config", "update-env", "staging", "--emergency-publish=false"); !strings.Contains(out, "emergency publish false") {
		t.Fatalf("update-env: %s", out)
	}
	if out := run(t, h, "config", "envs", "-o", "json"); !strings.Contains(out, `"name": "staging"`) {
		t.Fatalf("envs: %s", out)
	}
	// Errors are clear.
	if _, err := runErr(h, "config", "get", "--env", "dev", "--app", "ghost", "x"); err == nil || !strings.Contains(err.Error(), `app "ghost"`) {
		t.Fatalf("unknown app: %v", err)
	}
	if _, err := runErr(h, "config", "get", "--env", "dev", "x"); err == nil || !strings.Contains(err.Error(), "--app") {
		t.Fatalf("missing app: %v", err)
	}
	if _, err := runErr(h, "config", "apps", "-o", "xml"); err == nil {
		t.Fatal("bad output format accepted")
	}
}
