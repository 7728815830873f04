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
	cmd := &cobra.Command{Use: "id", Short: "Unique IDs: decode a snowflake ID into its fields, list the layouts"}
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
			return g.print(d, func(w *tabwriter.Writer) {
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
			return g.print(ls, func(w *tabwriter.Writer) {
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
	cmd.AddCommand(decode, layouts)
	return cmd
}
