package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/server"
)

// globals are the client flags shared by every client command.
type globals struct {
	server string
	token  string
	output string
	out    io.Writer
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:           "tangram",
		Short:         "Tangram: a complete microservice platform in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.server, "server", envOr("TANGRAM_SERVER", "http://127.0.0.1:7070"), "server URL (env TANGRAM_SERVER)")
	root.PersistentFlags().StringVar(&g.token, "token", os.Getenv("TANGRAM_TOKEN"), "API token (env TANGRAM_TOKEN)")
	root.PersistentFlags().StringVarP(&g.output, "output", "o", "table", "output format: table, json or yaml")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		g.out = cmd.OutOrStdout()
		switch g.output {
		case "table", "json", "yaml":
			return nil
		}
		return fmt.Errorf("--output %q: want table, json or yaml", g.output)
	}
	root.AddCommand(newServerCmd(), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Run:   func(cmd *cobra.Command, args []string) { fmt.Fprintln(cmd.OutOrStdout(), "tangram", server.Version) },
	}, &cobra.Command{
		Use:   "openapi",
		Short: "Print the HTTP API as an OpenAPI 3.1 document (docs/openapi.yaml)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			doc, err := server.OpenAPI()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(doc)
			return err
		},
	}, newConfigCmd(g), newAuthCmd(g), newRPCCmd(g), newRegistryCmd(g), newProxyCmd(g), newJobCmd(g), newBrokerCmd(g), newMQCmd(g))
	return root
}

func (g *globals) authAdmin() *auth.Client { return auth.NewClient(g.server, g.token) }

func (g *globals) configAdmin() *config.Admin { return config.NewAdmin(g.server, g.token) }

func (g *globals) jobAdmin() *job.Admin { return job.NewAdmin(g.server, g.token) }

func (g *globals) registryAdmin() *registry.Admin { return registry.NewAdmin(g.server, g.token) }

// print writes v as JSON or YAML, or calls table for the table format.
func (g *globals) print(v any, table func(w *tabwriter.Writer)) error {
	switch g.output {
	case "json":
		enc := json.NewEncoder(g.out)
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
		return yaml.NewEncoder(g.out).Encode(generic)
	}
	tw := tabwriter.NewWriter(g.out, 2, 4, 2, ' ', 0)
	table(tw)
	return tw.Flush()
}

func row(w io.Writer, cols ...any) {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = strings.ReplaceAll(fmt.Sprint(c), "\n", "\\n")
	}
	fmt.Fprintln(w, strings.Join(parts, "\t"))
}
