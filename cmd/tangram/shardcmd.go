package main

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/shard"
	"github.com/tangram-dev/tangram/shard/proxy"
	"github.com/tangram-dev/tangram/shard/ruleconfig"
	"github.com/tangram-dev/tangram/shard/sqldriver"
)

func newShardCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "shard", Short: "Sharding: check a rules file, show where a statement goes"}
	read := func(path string) (*shard.Rules, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return shard.ParseRules(b)
	}
	check := &cobra.Command{Use: "check RULES.yaml", Short: "Check sharding rules (every problem, with its line) and list each table's data nodes", Args: cobra.ExactArgs(1),
		Example: `  tangram shard check examples/shard/sharding.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := read(args[0])
			if err != nil {
				return err
			}
			type table struct {
				Table string       `json:"table"`
				Nodes []shard.Node `json:"nodes"`
			}
			var out []table
			for _, name := range r.Tables() {
				out = append(out, table{name, r.Table(name).Nodes})
			}
			return g.Print(out, func(w *tabwriter.Writer) {
				row(w, "TABLE", "NODES", "DATA NODES")
				for _, t := range out {
					var ns []string
					for _, n := range t.Nodes {
						ns = append(ns, n.String())
					}
					row(w, t.Table, len(ns), strings.Join(ns, " "))
				}
			})
		}}
	var argv []string
	route := &cobra.Command{Use: "route RULES.yaml SQL", Short: "Show the statements SQL becomes: each data source's, with its table names and arguments", Args: cobra.ExactArgs(2),
		Example: `  tangram shard route examples/shard/sharding.yaml "SELECT * FROM t_order WHERE user_id = ? AND order_id = ?" --arg 3 --arg 6`,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := read(args[0])
			if err != nil {
				return err
			}
			vals := make([]any, len(argv))
			for i, a := range argv {
				// A number is a number; anything else is text.
				if n, err := strconv.ParseInt(a, 10, 64); err == nil {
					vals[i] = n
				} else {
					vals[i] = a
				}
			}
			rd, err := shard.NewRouter(r).Route(args[1], vals)
			if err != nil {
				return err
			}
			return g.Print(rd.Units, func(w *tabwriter.Writer) {
				row(w, "DATA SOURCE", "STATEMENT", "ARGUMENTS")
				for _, u := range rd.Units {
					row(w, u.DataSource, u.SQL, fmt.Sprint(u.Args))
				}
			})
		}}
	route.Flags().StringArrayVar(&argv, "arg", nil, "an argument for the next ? (repeat; integers as numbers)")
	cmd.AddCommand(check, route, newShardProxyCmd(g, read), newShardMigrateCmd(g))
	return cmd
}

func newShardProxyCmd(g *globals, read func(string) (*shard.Rules, error)) *cobra.Command {
	var listen, database, authPlugin, logFormat, logLevel string
	var cfgEnv, cfgApp, cfgCluster, cfgNS string
	var users []string
	var maxConns, poolSize, parallel int
	cmd := &cobra.Command{Use: "proxy [RULES.yaml]", Short: "Serve the MySQL protocol over the sharded data sources: any MySQL client or driver sees one database", Args: cobra.MaximumNArgs(1),
		Example: `  tangram shard proxy examples/shard/sharding.yaml --listen 127.0.0.1:3307 --user app:secret
  TANGRAM_SHARD_PASSWORD=secret tangram shard proxy rules.yaml --user app --auth-plugin caching_sha2_password
  tangram shard proxy --server http://127.0.0.1:7070 --env prod --app shop --namespace sharding.yaml --user app:secret`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == (cfgNS != "") {
				return fmt.Errorf("give a rules file or --namespace (rules from the config center), one of them")
			}
			log, err := newLogger(logFormat, logLevel)
			if err != nil {
				return err
			}
			accounts := map[string]string{}
			for _, u := range users {
				name, pass, ok := strings.Cut(u, ":")
				if !ok {
					pass, ok = os.LookupEnv("TANGRAM_SHARD_PASSWORD")
					if !ok {
						return fmt.Errorf("--user %s: give NAME:PASSWORD, or NAME with the password in TANGRAM_SHARD_PASSWORD", u)
					}
				}
				accounts[name] = pass
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			var r *shard.Rules
			var w *ruleconfig.Watcher
			if cfgNS != "" {
				c, err := config.NewClient(ctx, config.ClientConfig{Servers: strings.Split(g.server, ","), Token: g.token,
					Env: cfgEnv, App: cfgApp, Cluster: cfgCluster, Namespaces: []string{cfgNS}, Logger: log})
				if err != nil {
					return err
				}
				defer c.Close()
				if w, err = ruleconfig.Open(c, cfgNS, log); err != nil {
					return err
				}
				defer w.Stop()
				r = w.Rules()
			} else if r, err = read(args[0]); err != nil {
				return err
			}
			pools := sqldriver.NewPools(poolSize)
			defer pools.Close()
			dbs, err := pools.Open(r)
			if err != nil {
				return err
			}
			srv, err := proxy.NewServer(r, dbs, proxy.Config{Users: accounts, Database: database, AuthPlugin: authPlugin,
				MaxConns: maxConns, Executor: shard.ExecutorConfig{MaxParallel: parallel}, Logger: log})
			if err != nil {
				return err
			}
			update := func(r *shard.Rules) error {
				dbs, err := pools.Open(r)
				if err != nil {
					return err
				}
				if err := srv.Update(r, dbs); err != nil {
					return err
				}
				pools.Keep(r)
				return nil
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				srv.Close()
				return err
			}
			fmt.Fprintf(g.Out, "serving database %s of %d data sources on %s\n", srv.Database(), len(dbs), ln.Addr())
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ln) }()
			hup := make(chan os.Signal, 1)
			if w != nil {
				w.Start(update)
			} else {
				// SIGHUP reads the rules file again.
				signal.Notify(hup, syscall.SIGHUP)
				defer signal.Stop(hup)
			}
			for {
				select {
				case <-ctx.Done():
					srv.Close()
					<-done
					return nil
				case err := <-done:
					srv.Close()
					return err
				case <-hup:
					r, err := read(args[0])
					if err == nil {
						err = update(r)
					}
					if err != nil {
						log.Error("sharding rules not reloaded (kept the rules before)", "file", args[0], "err", err)
					} else {
						log.Info("sharding rules reloaded", "file", args[0], "tables", len(r.Tables()))
					}
				}
			}
		}}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:3307", "address to serve the MySQL protocol on")
	f.StringArrayVar(&users, "user", nil, "an account clients log in with, NAME:PASSWORD or NAME (password from TANGRAM_SHARD_PASSWORD); repeatable, at least one")
	f.StringVar(&database, "database", "sharding_db", "the database name clients see")
	f.StringVar(&authPlugin, "auth-plugin", proxy.NativePassword, "the authentication the handshake proposes: mysql_native_password or caching_sha2_password")
	f.IntVar(&maxConns, "max-conns", 1024, "client connections allowed at once")
	f.IntVar(&poolSize, "pool", 32, "connections per data source")
	f.IntVar(&parallel, "parallel", 0, "statements one query runs at once across data sources (0: the executor's default)")
	f.StringVar(&cfgEnv, "env", "dev", "with --namespace: the config environment")
	f.StringVar(&cfgApp, "app", "", "with --namespace: the config app")
	f.StringVar(&cfgCluster, "cluster", "default", "with --namespace: the config cluster")
	f.StringVar(&cfgNS, "namespace", "", "read the rules from this yaml namespace of the config center at --server (and follow its releases) instead of a file")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
