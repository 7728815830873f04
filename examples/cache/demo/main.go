// Command demo shows the two-tier cache riding out a restart of its
// remote tier: it starts a kv server of its own (an in-memory stand-in
// for Redis it can stop), reads a user through the cache, stops the kv
// server and reads again — served by the local tier — then starts kv
// again, and shows the write path (database first, then Delete).
//
//	go run ./examples/cache/demo
package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tangram-dev/tangram/cache"
	kvserver "github.com/tangram-dev/tangram/kv/server"
)

// db is the source of truth: a table of users.
type db struct {
	mu    sync.Mutex
	users map[string]string
}

func (d *db) get(key string) (string, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, ok := d.users[key]
	return v, ok
}

func (d *db) set(key, v string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.users[key] = v
}

func startKV(addr string) (*kvserver.Server, error) {
	s, err := kvserver.New(kvserver.Config{Addr: addr, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	return s, s.Start(context.Background())
}

// quiet drops go-redis's own log lines (its pool retrying the stopped
// server).
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func main() {
	redis.SetLogger(quiet{})
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	ctx := context.Background()
	kv, err := startKV("127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := kv.Addr()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	users := &db{users: map[string]string{"user:42": "Ada"}}
	source := "" // what the last read came from
	c, err := cache.New(cache.Config[string]{
		Name: "demo", Remote: rdb, Codec: cache.String{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Load: func(ctx context.Context, key string) (string, error) {
			source = "loaded from the database"
			if v, ok := users.get(key); ok {
				return v, nil
			}
			return "", cache.ErrNotFound
		},
	})
	if err != nil {
		return err
	}
	defer c.Close()
	<-c.Ready()
	read := func(note string) error {
		source = ""
		before := c.Stats()
		v, err := c.Get(ctx, "user:42")
		if err != nil {
			return err
		}
		if source == "" {
			source = "local tier"
			if c.Stats().RemoteHits > before.RemoteHits {
				source = "remote tier"
			}
		}
		fmt.Printf("read user:42 → %s (%s%s)\n", v, source, note)
		return nil
	}
	if err := read(""); err != nil {
		return err
	}
	if err := read(""); err != nil {
		return err
	}
	if err := kv.Close(); err != nil {
		return err
	}
	fmt.Println("kv stopped")
	if err := read(", kv down"); err != nil {
		return err
	}
	kv, err = startKV(addr)
	if err != nil {
		return err
	}
	defer kv.Close()
	fmt.Println("kv started again (empty)")
	// The write path: the database first, then the cache.
	users.set("user:42", "Ada Lovelace")
	for deadline := time.Now().Add(10 * time.Second); ; {
		err := c.Delete(ctx, "user:42")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond) // the client reconnecting
	}
	fmt.Println("updated the database, then deleted the key")
	return read("")
}
