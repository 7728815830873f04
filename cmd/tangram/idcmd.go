package main

import (
	"fmt"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/idgen"
)

func newIDCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "id", Short: "Unique IDs: take IDs of a segment tag, list tags and leased worker numbers, decode a snowflake ID"}
	var layout string
	decode := &cobra.Command{Use: "decode ID", Short: "Read a snowflake ID's fields and time (--layout seed, twitter or sonyflake)", Args: cobra.ExactArgs(1),
		Example: `  tangram id decode 1449012453926924288 --layout twitter`,
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := idgen.LayoutByName(layout)
			if err != nil {
				return err
			}
			id, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("id %q: want a decimal 64-bit integer", args[0])
			}
			d, err := l.Decode(id)
			if err != nil {
				return err
			}
			return g.Print(d, func(w *tabwriter.Writer) {
				row(w, "FIELD", "VALUE")
				for _, f := range d.Fields {
					v := strconv.FormatInt(f.Value, 10)
					if f.Name == idgen.FieldTime {
						v += " (" + d.Time.UTC().Format(time.RFC3339Nano) + ")"
					}
					row(w, f.Name, v)
				}
			})
		}}
	decode.Flags().StringVar(&layout, "layout", "seed", "the ID's layout: seed, twitter or sonyflake")
	layouts := &cobra.Command{Use: "layouts", Short: "List the layouts: fields from the most significant bit", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ls := idgen.Layouts()
			return g.Print(ls, func(w *tabwriter.Writer) {
				row(w, "LAYOUT", "UNIT", "EPOCH", "FIELDS (bits)")
				for _, l := range ls {
					fs := ""
					for i, f := range l.Fields {
						if i > 0 {
							fs += " "
						}
						fs += fmt.Sprintf("%s:%d", f.Name, f.Bits)
					}
					row(w, l.Name, l.Unit, l.Epoch.Format("2006-01-02"), fs)
				}
			})
		}}
	var tag string
	var count int
	next := &cobra.Command{Use: "next", Short: "Take IDs of a segment tag from the server (the tag is created on first use)", Args: cobra.NoArgs,
		Example: `  tangram id next --tag orders -n 3`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ids, err := idgen.NewAdmin(g.server, g.token).Next(cmd.Context(), tag, count)
			if err != nil {
				return err
			}
			return g.Print(ids, func(w *tabwriter.Writer) {
				for _, id := range ids {
					row(w, id)
				}
			})
		}}
	next.Flags().StringVar(&tag, "tag", "", "the segment tag (letters, digits, . _ - : /)")
	next.Flags().IntVarP(&count, "count", "n", 1, "how many IDs (1–10000)")
	_ = next.MarkFlagRequired("tag")
	segments := &cobra.Command{Use: "segments", Short: "List the segment tags: where the next range starts, the step, this server's buffer", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a := idgen.NewAdmin(g.server, g.token)
			tags, err := a.Tags(cmd.Context())
			if err != nil {
				return err
			}
			bufs, err := a.Buffers(cmd.Context())
			if err != nil {
				return err
			}
			by := map[string]idgen.State{}
			for _, b := range bufs {
				by[b.Tag] = b
			}
			return g.Print(tags, func(w *tabwriter.Writer) {
				row(w, "TAG", "NEXT RANGE FROM", "STEP", "SERVER BUFFER", "UPDATED")
				for _, t := range tags {
					buf := "-"
					if b, ok := by[t.Tag]; ok {
						buf = fmt.Sprintf("%d in [%d, %d)", b.Next, b.Start, b.End)
						if b.Spare {
							buf += " +next"
						}
					}
					row(w, t.Tag, t.MaxID, t.Step, buf, time.UnixMilli(t.UpdatedAt).UTC().Format(time.RFC3339))
				}
			})
		}}
	var start, step int64
	var desc string
	tagCmd := &cobra.Command{Use: "tag TAG", Short: "Create a segment tag (--start, --step) or change its step and description (admin)", Args: cobra.ExactArgs(1),
		Example: `  tangram id tag users --start 1000000 --step 500`,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := idgen.NewAdmin(g.server, g.token).SaveTag(cmd.Context(), idgen.TagRequest{Tag: args[0], Start: start, Step: step, Description: desc})
			if err != nil {
				return err
			}
			return g.Print(t, func(w *tabwriter.Writer) {
				row(w, "TAG", "NEXT RANGE FROM", "STEP")
				row(w, t.Tag, t.MaxID, t.Step)
			})
		}}
	tagCmd.Flags().Int64Var(&start, "start", 0, "the first ID of a new tag (default 1)")
	tagCmd.Flags().Int64Var(&step, "step", 0, "the range size (default 1000; clients ask for more when they use it up fast)")
	tagCmd.Flags().StringVar(&desc, "description", "", "what the tag numbers")
	workers := &cobra.Command{Use: "workers", Short: "List the worker numbers leased to snowflake generators", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ws, err := idgen.NewAdmin(g.server, g.token).Workers(cmd.Context())
			if err != nil {
				return err
			}
			now := time.Now().UnixMilli()
			return g.Print(ws, func(w *tabwriter.Writer) {
				row(w, "POOL", "NUMBER", "TERM", "HOLDER", "STATE", "NOT BEFORE")
				for _, x := range ws {
					state := "free"
					if x.ExpiresAt >= now {
						state = "leased"
					}
					row(w, x.Pool, x.Worker, x.Term, x.Holder, state, time.UnixMilli(x.NotBeforeMs).UTC().Format(time.RFC3339Nano))
				}
			})
		}}
	cmd.AddCommand(decode, layouts, next, segments, tagCmd, workers)
	return cmd
}
