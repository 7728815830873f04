// Package cliout is how Tangram's commands print: a value as a table, as
// JSON or as YAML (the --output flag), and where defaults come from the
// environment.
package cliout

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
)

// yamlEncode writes a value as YAML, when the program prints YAML (it
// imports cliout/yamlout). A hook rather than an import so that the lean
// runtime binary does not pay YAML's package initialisation on every run.
var yamlEncode func(w io.Writer, v any) error

// RegisterYAML gives the printers YAML output (cliout/yamlout's init).
func RegisterYAML(encode func(w io.Writer, v any) error) { yamlEncode = encode }

// Printer writes results in Format ("table", "json" or "yaml") to Out.
type Printer struct {
	Format string
	Out    io.Writer
}

// Check refuses an unknown format.
func (p *Printer) Check() error {
	switch p.Format {
	case "table", "json":
		return nil
	case "yaml":
		if yamlEncode != nil {
			return nil
		}
		return fmt.Errorf("--output yaml: this binary prints table or json")
	}
	if yamlEncode == nil {
		return fmt.Errorf("--output %q: want table or json", p.Format)
	}
	return fmt.Errorf("--output %q: want table, json or yaml", p.Format)
}

// Print writes v as JSON or YAML, or calls table for the table format.
func (p *Printer) Print(v any, table func(w *tabwriter.Writer)) error {
	switch p.Format {
	case "json":
		enc := json.NewEncoder(p.Out)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	case "yaml":
		// Round-trip through JSON so YAML keys match the API's field names.
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var generic any
		if err := json.Unmarshal(b, &generic); err != nil {
			return err
		}
		if yamlEncode == nil {
			return fmt.Errorf("--output yaml: this binary prints table or json")
		}
		return yamlEncode(p.Out, generic)
	}
	tw := tabwriter.NewWriter(p.Out, 2, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

// Row writes one table row: the columns tab-separated, newlines escaped.
func Row(w io.Writer, cols ...any) {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = strings.ReplaceAll(fmt.Sprint(c), "\n", "\\n")
	}
	fmt.Fprintln(w, strings.Join(parts, "\t"))
}

// EnvOr returns the environment variable k, or def when it is unset or
// empty.
func EnvOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
