// Command config is a small service that reads its configuration from the
// Tangram config center and follows every release without a restart.
//
//	go run ./cmd/tangram server &               # and note the admin token
//	tangram config create-app demo
//	tangram config set --env dev --app demo greeting hello
//	tangram config set --env dev --app demo interval 2s
//	tangram config publish --env dev --app demo -m first
//	TANGRAM_TOKEN=… go run ./examples/config --app demo
//	tangram config set --env dev --app demo greeting "hello again" && tangram config publish --env dev --app demo -m second
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/config"
)

// settings is bound to the "application" namespace; it is replaced, never
// mutated, when a release arrives.
type settings struct {
	Greeting string        `config:"greeting"`
	Interval time.Duration `config:"interval"`
}

func main() {
	servers := flag.String("servers", "http://127.0.0.1:7070", "config servers, comma separated")
	env := flag.String("env", "dev", "environment")
	app := flag.String("app", "demo", "app")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	cl, err := config.NewClient(ctx, config.ClientConfig{
		Servers: strings.Split(*servers, ","), Token: os.Getenv("TANGRAM_TOKEN"),
		Env: *env, App: *app, Logger: log,
	})
	if err != nil {
		log.Error("config", "err", err)
		os.Exit(1)
	}
	defer cl.Close()
	conf, err := config.Bind[settings](cl, config.DefaultNamespace)
	if err != nil {
		log.Error("bind", "err", err)
		os.Exit(1)
	}
	cl.Watch(config.DefaultNamespace, "greeting", func(old, new string) {
		log.Info("greeting changed", "old", old, "new", new)
	})
	for {
		s := conf.Load()
		fmt.Printf("%s (release %s)\n", s.Greeting, cl.ReleaseKey(config.DefaultNamespace))
		wait := s.Interval
		if wait <= 0 {
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}
