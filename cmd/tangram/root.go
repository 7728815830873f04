package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/cmd/internal/cliout"
	_ "github.com/tangram-dev/tangram/cmd/internal/cliout/yamlout" // -o yaml
	"github.com/tangram-dev/tangram/cmd/internal/containercli"
	"github.com/tangram-dev/tangram/cmd/internal/imagecli"
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
	cliout.Printer
}

func envOr(k, def string) string { return cliout.EnvOr(k, def) }

func newRoot() *cobra.Command {
	root, _ := newRootWith()
	return root
}

// newRootWith returns the root command and the globals its flags fill.
func newRootWith() (*cobra.Command, *globals) {
	g := &globals{}
	root := &cobra.Command{
		Use:           "tangram",
		Short:         "Tangram: a complete microservice platform in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Defaults come from the environment when the command runs, not when
	// --help is drawn: help must never print a token.
	root.PersistentFlags().StringVar(&g.server, "server", "", "server URL, scheme optional (default: env TANGRAM_SERVER, else http://127.0.0.1:7070)")
	root.PersistentFlags().StringVar(&g.token, "token", "", "API token (default: env TANGRAM_TOKEN)")
	root.PersistentFlags().StringVarP(&g.Format, "output", "o", "table", "output format: table, json or yaml")
	root.PersistentPreRunE = func(cmd *cobra.Command, args []string) error {
		g.Out = cmd.OutOrStdout()
		if !cmd.Flags().Changed("server") {
			g.server = envOr("TANGRAM_SERVER", "http://127.0.0.1:7070")
		}
		g.server = serverURL(g.server)
		if !cmd.Flags().Changed("token") {
			g.token = os.Getenv("TANGRAM_TOKEN")
		}
		if cmd.Flags().Lookup("log-level") == nil {
			// A client command: the libraries' warnings (an endpoint out
			// of rotation…) would only repeat the error it returns.
			slog.SetDefault(slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelError})))
		}
		return g.Check()
	}
	root.AddCommand(newServerCmd(), newCollectorCmd(), &cobra.Command{
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
	}, newStatusCmd(g), newConfigCmd(g), newAuthCmd(g), newRPCCmd(g), newRegistryCmd(g), newProxyCmd(g), newJobCmd(g), newBrokerCmd(g), newMQCmd(g), newKVCmd(), newLockCmd(g), newIDCmd(g), newTxnCmd(g), newShardCmd(g), newTraceCmd(g), containercli.Command(&g.Printer), imagecli.ImageCommand(&g.Printer))
	refuseUnknownSubcommands(root)
	return root, g
}

// serverURL accepts a server as a URL, as host:port (http assumed) or as
// :port (this host), and a comma-separated list of them.
func serverURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if strings.HasPrefix(p, ":") {
			p = "127.0.0.1" + p // :port is this host
		}
		if p != "" && !strings.Contains(p, "://") {
			p = "http://" + p
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}

// refuseUnknownSubcommands makes a command group given an unknown
// subcommand (`tangram config gett`) fail naming it, as the root does,
// instead of printing its help and exiting 0.
func refuseUnknownSubcommands(c *cobra.Command) {
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
	if !c.HasSubCommands() || c.Run != nil || c.RunE != nil || c == c.Root() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
		}
		return fmt.Errorf("%s\n\nRun '%s --help' for usage", msg, cmd.CommandPath())
	}
}

func (g *globals) authAdmin() *auth.Client { return auth.NewClient(g.server, g.token) }

func (g *globals) configAdmin() *config.Admin { return config.NewAdmin(g.server, g.token) }

func (g *globals) jobAdmin() *job.Admin { return job.NewAdmin(g.server, g.token) }

func (g *globals) registryAdmin() *registry.Admin { return registry.NewAdmin(g.server, g.token) }

func row(w io.Writer, cols ...any) { cliout.Row(w, cols...) }
