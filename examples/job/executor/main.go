// Command executor is an example Tangram job executor: it registers with the
// scheduler as app "demo" and offers three handlers.
//
//		TANGRAM_TOKEN=… go run ./examples/job/executor -servers 127.0.0.1:7071
//
//	  - hello: logs a greeting with the run's params;
//	  - record: appends "job fire_at run shard/total" to the -record file (the
//	    kill -9 tests count double and missed fires with it);
//	  - sleep: sleeps for the duration in its params ("2s"), logging each second,
//	    until it is killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tangram-dev/tangram/job/goglue"

	"github.com/tangram-dev/tangram/job"
)

func main() {
	servers := flag.String("servers", "127.0.0.1:7071", "tangram servers' RPC addresses")
	app := flag.String("app", "demo", "executor app (group)")
	listen := flag.String("listen", "127.0.0.1:0", "address the scheduler reaches this executor at")
	record := flag.String("record", "", "file the record handler appends to")
	glue := flag.String("glue", "", "glue types to run, comma-separated: shell,python3,go (none by default)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var types []string
	if *glue != "" {
		types = strings.Split(*glue, ",")
	}
	if err := run(*servers, *app, *listen, *record, types, log); err != nil {
		log.Error("executor", "err", err)
		os.Exit(1)
	}
}

func run(servers, app, listen, record string, glue []string, log *slog.Logger) error {
	e, err := job.NewExecutor(job.ExecutorConfig{Servers: strings.Split(servers, ","), Token: os.Getenv("TANGRAM_TOKEN"), App: app,
		ListenAddr: listen, Logger: log, HeartbeatInterval: time.Second, Glue: glue, GoGlue: goglue.Interpreter{}})
	if err != nil {
		return err
	}
	e.Handle("hello", func(ctx context.Context, jc *job.Context) error {
		jc.Log.Info("hello", "params", jc.Params, "shard", fmt.Sprintf("%d/%d", jc.ShardIndex, jc.ShardTotal))
		return nil
	})
	var mu sync.Mutex
	e.Handle("record", func(ctx context.Context, jc *job.Context) error {
		if record == "" {
			return fmt.Errorf("no -record file")
		}
		mu.Lock()
		defer mu.Unlock()
		f, err := os.OpenFile(record, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = fmt.Fprintf(f, "%d %d %d %d/%d\n", jc.JobID, jc.FireAt.UnixMilli(), jc.RunID, jc.ShardIndex, jc.ShardTotal)
		return err
	})
	e.Handle("sleep", func(ctx context.Context, jc *job.Context) error {
		d, err := time.ParseDuration(jc.Params)
		if err != nil {
			return fmt.Errorf("params %q: want a duration", jc.Params)
		}
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			jc.Log.Info("sleeping", "left", time.Until(end).Round(time.Second))
			select {
			case <-ctx.Done():
				return context.Cause(ctx)
			case <-time.After(min(time.Second, time.Until(end))):
			}
		}
		return nil
	})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := e.Start(ctx); err != nil {
		return err
	}
	fmt.Printf("executor %s serving app %q at %s\n", os.Args[0], app, e.Addr())
	<-ctx.Done()
	return e.Close()
}
