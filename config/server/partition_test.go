package server_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"

	"github.com/tangram-dev/tangram/config"

	"github.com/tangram-dev/tangram/internal/netfault"
	"github.com/tangram-dev/tangram/internal/store/storetest"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestClientPartition: the client's server is cut off without a FIN or
// RST (a partition, not a crash). The held watch times out, the client
// moves to the other server and gets the release made meanwhile.
func TestClientPartition(t *testing.T) {
	dsn := storetest.DSN(t, "postgres")
	key := bytes.Repeat([]byte{3}, 32)
	a := servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(key))
	b := servertest.Start(t, servertest.WithStore(dsn), servertest.WithSecretKey(key))
	cb := b.Client()
	mustDo(t, cb, "POST", "/api/v1/config/apps", config.App{Name: "demo"}, nil)
	setItem(t, cb, "application", "k", "v1")
	publish(t, cb, "application", "one")
	px := netfault.New(t, a.Srv.Addr())
	cl, err := config.NewClient(context.Background(), config.ClientConfig{Servers: []string{"http://" + px.Addr(), b.URL}, Token: a.Token, Env: "dev", App: "demo",
		CacheDir: servertest.CacheDir(t), WatchTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	wait.For(t, 5*time.Second, "watch held on a through the proxy", func() bool { return a.Srv.Config().Watchers() > 0 })
	px.Partition()
	setItem(t, cb, "application", "k", "v2")
	start := time.Now()
	publish(t, cb, "application", "two")
	wait.For(t, 20*time.Second, "client to leave the partitioned server and catch up", func() bool { return cl.String("k", "") == "v2" })
	t.Logf("caught up %v after the release (watch hold 2s + 5s margin)", time.Since(start).Round(time.Millisecond))
	if cl.String("k", "") != "v2" {
		t.Fatal("lost the release")
	}
}
