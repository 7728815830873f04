package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/shard"
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
			return g.print(out, func(w *tabwriter.Writer) {
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
			return g.print(rd.Units, func(w *tabwriter.Writer) {
				row(w, "DATA SOURCE", "STATEMENT", "ARGUMENTS")
				for _, u := range rd.Units {
					row(w, u.DataSource, u.SQL, fmt.Sprint(u.Args))
				}
			})
		}}
	route.Flags().StringArrayVar(&argv, "arg", nil, "an argument for the next ? (repeat; integers as numbers)")
	cmd.AddCommand(check, route)
	return cmd
}
