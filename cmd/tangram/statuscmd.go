package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// newStatusCmd reports whether the server answers; --wait polls until it
// does (for scripts and tours that start a server in the background).
func newStatusCmd(g *globals) *cobra.Command {
	var wait time.Duration
	cmd := &cobra.Command{Use: "status", Short: "Report whether the server answers (--wait: until it does)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			server := strings.Split(g.server, ",")[0]
			deadline := time.Now().Add(wait)
			var last error
			for {
				last = ready(cmd.Context(), server)
				if last == nil {
					fmt.Fprintf(g.Out, "server %s is ready\n", server)
					return nil
				}
				if time.Now().After(deadline) {
					break
				}
				select {
				case <-cmd.Context().Done():
					return cmd.Context().Err()
				case <-time.After(200 * time.Millisecond):
				}
			}
			if wait > 0 {
				return fmt.Errorf("server %s not ready after %v: %w", server, wait, last)
			}
			return last
		}}
	cmd.Flags().DurationVar(&wait, "wait", 0, "keep asking this long until the server is ready")
	return cmd
}

func ready(ctx context.Context, server string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", strings.TrimRight(server, "/")+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /readyz: %s", resp.Status)
	}
	return nil
}
