package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/rpc/codec"
	"github.com/tangram-dev/tangram/rpc/gen"
)

func newRPCCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "rpc", Short: "Tangram RPC: generate typed clients from Go interfaces, call methods"}

	var types []string
	var service, out string
	genCmd := &cobra.Command{
		Use:   "gen [dir]",
		Short: "Write a typed client and server registration for the Go interfaces in a package",
		Long: `Reads the Go package in dir (default: the current directory) and writes, next to
it, <interface>_rpc.go: a client type implementing each interface by remote calls
and a Register<Interface> function for servers. Methods must look like
  Name(ctx context.Context, req *Req) (*Resp, error)   // unary
  Name(ctx context.Context, req *Req) error            // oneway`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			res, err := gen.Generate(gen.Options{Dir: dir, Types: types, Service: service})
			if err != nil {
				return err
			}
			if out == "-" {
				_, err := g.Out.Write(res.Source)
				return err
			}
			if out == "" {
				out = filepath.Join(dir, res.File)
			}
			if err := os.WriteFile(out, res.Source, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "wrote %s (%s)\n", out, strings.Join(res.Types, ", "))
			return nil
		},
	}
	genCmd.Flags().StringSliceVar(&types, "type", nil, "interfaces to generate for (default: every RPC-shaped interface)")
	genCmd.Flags().StringVar(&service, "service", "", "service name on the wire (default: the interface name; needs one --type)")
	genCmd.Flags().StringVar(&out, "out", "", "output file (default: <dir>/<interface>_rpc.go; - for stdout)")

	var timeout time.Duration
	var headers []string
	callCmd := &cobra.Command{
		Use:   "call ADDR SERVICE/METHOD [JSON|-]",
		Short: "Call a method with a JSON request and print the JSON response",
		Example: `  tangram rpc call 127.0.0.1:7071 Greeter/SayHello '{"Name":"seed"}'
  echo '{"Name":"seed"}' | tangram rpc call 127.0.0.1:7071 Greeter/SayHello -`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := []byte("{}")
			if len(args) == 3 {
				body = []byte(args[2])
				if args[2] == "-" {
					b, err := io.ReadAll(cmd.InOrStdin())
					if err != nil {
						return err
					}
					body = b
				}
			}
			if !json.Valid(body) {
				return fmt.Errorf("request is not valid JSON: %s", body)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			var kv []string
			for _, h := range headers {
				k, v, ok := strings.Cut(h, "=")
				if !ok {
					return fmt.Errorf("--header %q: want key=value", h)
				}
				kv = append(kv, k, v)
			}
			if g.token != "" {
				kv = append(kv, rpc.MetaAuthorization, "Bearer "+g.token)
			}
			ctx = rpc.WithOutgoing(ctx, kv...)
			c, err := rpc.Dial(ctx, args[0], rpc.WithCodec(codec.JSON), rpc.WithRetry(rpc.RetryPolicy{MaxAttempts: 1}))
			if err != nil {
				return err
			}
			defer c.Close()
			var resp json.RawMessage
			if err := c.Invoke(ctx, args[1], json.RawMessage(body), &resp); err != nil {
				return err
			}
			var pretty any
			if err := json.Unmarshal(resp, &pretty); err != nil {
				return err
			}
			enc := json.NewEncoder(g.Out)
			enc.SetIndent("", "  ")
			return enc.Encode(pretty)
		},
	}
	callCmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "deadline of the call")
	callCmd.Flags().StringArrayVarP(&headers, "header", "H", nil, "metadata key=value (repeatable)")
	cmd.AddCommand(genCmd, callCmd)
	return cmd
}
