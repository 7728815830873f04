package main

import (
	"context"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/txn"
)

func msTime(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339)
}

func printGlobals(g *globals, gs []txn.Global, next string) error {
	return g.Print(gs, func(w *tabwriter.Writer) {
		row(w, "XID", "MODE", "APP", "STATUS", "CREATED", "REASON")
		for _, x := range gs {
			row(w, x.XID, x.Mode, x.App, x.Status, msTime(x.CreatedAt), x.Reason)
		}
		if next != "" {
			row(w, "(more: --cursor "+next+")")
		}
	})
}

func printGlobal(g *globals, x txn.Global) error {
	return g.Print(x, func(w *tabwriter.Writer) {
		row(w, "XID", x.XID)
		row(w, "MODE", x.Mode)
		row(w, "APP", x.App)
		row(w, "STATUS", x.Status)
		if x.Phase != "" {
			row(w, "DECISION", x.Phase)
		}
		if x.Reason != "" {
			row(w, "REASON", x.Reason)
		}
		row(w, "CREATED", msTime(x.CreatedAt))
		if x.NextAt > 0 {
			row(w, "NEXT TRY", msTime(x.NextAt))
		}
		row(w, "")
		row(w, "BRANCH", "DONE", "ATTEMPTS", "TARGETS")
		for _, b := range x.Branches {
			var ts []string
			for _, t := range []string{b.Step.Action, b.Step.Compensate, b.Step.Confirm, b.Step.Cancel} {
				if t != "" && (len(ts) == 0 || ts[len(ts)-1] != t) {
					ts = append(ts, t)
				}
			}
			done := make([]string, len(b.Done))
			for i, d := range b.Done {
				done[i] = string(d)
			}
			row(w, b.ID, strings.Join(done, ","), b.Attempts, strings.Join(ts, " "))
		}
		if len(x.Events) > 0 {
			row(w, "")
			row(w, "AT", "BRANCH", "OP", "RESULT", "MS", "ERROR")
			for _, e := range x.Events {
				row(w, time.UnixMilli(e.At).UTC().Format("15:04:05.000"), e.Branch, e.Op, e.Result, e.Ms, e.Error)
			}
		}
	})
}

func newTxnCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "txn", Short: "Distributed transactions: list and inspect them, retry or abort the stuck ones"}
	var req txn.ListRequest
	var status, mode string
	list := &cobra.Command{Use: "list", Short: "List transactions, newest first (--status failed shows the parked ones)", Args: cobra.NoArgs,
		Example: `  tangram txn list --status failed`,
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Status, req.Mode = txn.Status(status), txn.Mode(mode)
			r, err := txn.NewAdmin(g.server, g.token).List(cmd.Context(), req)
			if err != nil {
				return err
			}
			return printGlobals(g, r.Items, r.Next)
		}}
	list.Flags().StringVar(&status, "status", "", "prepared, committing, aborting, committed, aborted or failed")
	list.Flags().StringVar(&mode, "mode", "", "saga, tcc or xa")
	list.Flags().StringVar(&req.App, "app", "", "the owning app")
	list.Flags().IntVar(&req.Limit, "limit", 50, "page size")
	list.Flags().StringVar(&req.Cursor, "cursor", "", "continue after this XID (from the previous page)")
	get := &cobra.Command{Use: "get XID", Short: "Show a transaction: its decision, branches and the timeline of branch calls", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			x, err := txn.NewAdmin(g.server, g.token).Get(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printGlobal(g, x)
		}}
	var wait time.Duration
	retry := &cobra.Command{Use: "retry XID", Short: "Resume a transaction parked as failed (or retry a pending one now)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := waitCtx(cmd.Context(), wait)
			defer cancel()
			x, err := txn.NewAdmin(g.server, g.token).Retry(ctx, args[0], wait > 0)
			if err != nil {
				return err
			}
			return printGlobal(g, x)
		}}
	retry.Flags().DurationVar(&wait, "wait", 10*time.Second, "wait this long for phase two to end (0: do not wait)")
	var reason string
	abort := &cobra.Command{Use: "abort XID", Short: "Roll back a prepared transaction, or compensate a saga parked as failed", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := waitCtx(cmd.Context(), wait)
			defer cancel()
			x, err := txn.NewAdmin(g.server, g.token).Abort(ctx, args[0], reason, wait > 0)
			if err != nil {
				return err
			}
			return printGlobal(g, x)
		}}
	abort.Flags().DurationVar(&wait, "wait", 10*time.Second, "wait this long for phase two to end (0: do not wait)")
	abort.Flags().StringVar(&reason, "reason", "", "why (kept with the transaction)")
	cmd.AddCommand(list, get, retry, abort)
	return cmd
}

// waitCtx bounds a call that waits d for phase two (a little more, so
// the server's answer arrives).
func waitCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d+2*time.Second)
}
