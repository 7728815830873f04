package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	kvserver "github.com/tangram-dev/tangram/kv/server"
	"github.com/tangram-dev/tangram/server"
)

func newKVCmd() *cobra.Command {
	var (
		listen, dir, fsync, logFormat, logLevel, password, policy, maxMem string
		noPersist                                                         bool
		ioLoops                                                           int
	)
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Run the Redis-protocol store on its own (tangram server runs one on :6380 too)",
		Long: `Run tangram kv alone: a RESP2/RESP3 server any Redis client talks to, with an
append-only log in --dir (fsync always, everysec or no). The password comes from
TANGRAM_KV_PASSWORD or --password; without one, connections need no AUTH.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log, err := newLogger(logFormat, logLevel)
			if err != nil {
				return err
			}
			cfg := kvserver.DefaultConfig()
			cfg.Addr, cfg.Fsync, cfg.Logger, cfg.Version = listen, fsync, log, server.Version
			cfg.Password = password
			cfg.IOLoops = ioLoops
			if p := os.Getenv("TANGRAM_KV_PASSWORD"); p != "" && password == "" {
				cfg.Password = p
			}
			if !noPersist {
				cfg.Dir = dir
			}
			cfg.MaxMemoryPolicy = policy
			if maxMem != "" {
				var n int64
				if _, err := fmt.Sscan(maxMem, &n); err != nil || n < 0 {
					return fmt.Errorf("--maxmemory %q: want a number of bytes", maxMem)
				}
				cfg.MaxMemory = n
			}
			s, err := kvserver.New(cfg)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if err := s.Start(ctx); err != nil {
				return err
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "tangram kv on", s.Addr())
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return s.Shutdown(sctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", ":6380", "listen address")
	f.StringVar(&dir, "dir", "./data/kv", "directory of the append-only log")
	f.BoolVar(&noPersist, "no-persist", false, "keep data in memory only")
	f.StringVar(&fsync, "fsync", "everysec", "append-only log fsync policy: always, everysec or no")
	f.StringVar(&password, "password", "", "the password AUTH must give (or TANGRAM_KV_PASSWORD)")
	f.StringVar(&policy, "maxmemory-policy", "noeviction", "noeviction, allkeys-lru, allkeys-lfu, allkeys-random, volatile-lru, volatile-lfu, volatile-random or volatile-ttl")
	f.StringVar(&maxMem, "maxmemory", "", "bound on the data's estimated size in bytes (default none)")
	f.IntVar(&ioLoops, "io-loops", 0, "event loops serving connections (0: one per CPU; -1: a goroutine per connection)")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
