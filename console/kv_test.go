package console_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/server/servertest"
)

// The kv page lists keys by pattern with their type and TTL, and the
// store's memory and commands; it is for admins only.
func TestKVPage(t *testing.T) {
	h := servertest.Start(t)
	rc := redis.NewClient(&redis.Options{Addr: h.Srv.KVAddr(), Password: servertest.AdminToken})
	defer rc.Close()
	ctx := context.Background()
	if err := rc.Set(ctx, "user:1", "ann", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.RPush(ctx, "user:queue", "a").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rc.Set(ctx, "other", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, get := adminSession(t, h)
	body := get("/kv?pattern=user:*")
	for _, want := range []string{"user:1", "user:queue", "string", "list", `id="kv-keys">3<`} {
		if !strings.Contains(body, want) {
			t.Fatalf("kv page lacks %q:\n%.3000s", want, body)
		}
	}
	if strings.Contains(body, "<td>other</td>") {
		t.Fatal("a key outside the pattern is listed")
	}
}
