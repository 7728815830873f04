package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/lock"
)

func newLockCmd(g *globals) *cobra.Command {
	var rpcServer string
	cmd := &cobra.Command{Use: "lock", Short: "Distributed locks on the server (ZooKeeper semantics): take, list, force-release, sessions"}
	cmd.PersistentFlags().StringVar(&rpcServer, "rpc-server", "", "server RPC address (env TANGRAM_RPC; default the --server host, port 7071)")

	var hold, ttl, waitFor time.Duration
	acquire := &cobra.Command{
		Use:   "acquire NAME [-- COMMAND ARGS...]",
		Short: "Take the lock NAME (app/...), waiting in line; run COMMAND while holding it, or hold it for --hold",
		Long: `Take the lock NAME in a session of its own, waiting behind earlier holders. With a
command, run it while holding the lock (its environment has TANGRAM_LOCK_FENCE, the
fencing token) and release after it exits; the command is stopped if the lock is
lost. Without one, hold the lock for --hold or until interrupted.`,
		Example: `  tangram lock acquire orders/nightly-report -- ./report.sh
  tangram lock acquire orders/migrate --hold 30s`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer cancel()
			c, err := lock.Dial(ctx, lock.Config{Servers: strings.Split(g.rpcTarget(rpcServer), ","), Token: g.token, SessionTTL: ttl, Owner: hostOwner()})
			if err != nil {
				return err
			}
			defer c.Close()
			m := c.Mutex(args[0])
			wctx := ctx
			if waitFor > 0 {
				var wcancel context.CancelFunc
				wctx, wcancel = context.WithTimeout(ctx, waitFor)
				defer wcancel()
			}
			l, err := m.TryLock(wctx)
			if errors.Is(err, lock.ErrNotAcquired) {
				fmt.Fprintf(cmd.ErrOrStderr(), "waiting for %s…\n", args[0])
				l, err = m.Lock(wctx)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "acquired %s (fence %d)\n", args[0], l.Fence)
			held, stop := l.Context(ctx)
			defer stop()
			var runErr error
			if len(args) > 1 {
				c := exec.CommandContext(held, args[1], args[2:]...)
				c.Env = append(os.Environ(), "TANGRAM_LOCK_FENCE="+strconv.FormatUint(l.Fence, 10))
				c.Stdin, c.Stdout, c.Stderr = os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()
				runErr = c.Run()
			} else {
				t := time.NewTimer(hold)
				select {
				case <-t.C:
				case <-held.Done():
				}
				t.Stop()
			}
			if err := l.Err(); err != nil {
				return err
			}
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer rcancel()
			if err := m.Unlock(rctx); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "released %s\n", args[0])
			return runErr
		},
	}
	acquire.Flags().DurationVar(&hold, "hold", 24*time.Hour, "how long to hold the lock without a command (Ctrl-C releases it)")
	acquire.Flags().DurationVar(&ttl, "ttl", 10*time.Second, "session TTL: how long the lock outlives this process if it dies")
	acquire.Flags().DurationVar(&waitFor, "wait", 0, "give up waiting after this long (default: wait until interrupted)")

	lockTable := func(ls []lock.LockInfo) func(w *tabwriter.Writer) {
		return func(w *tabwriter.Writer) {
			row(w, "LOCK", "FENCE", "HOLDER", "SESSION", "SINCE", "WAITERS")
			for _, l := range ls {
				row(w, l.Name, l.Holder.Seq, l.Holder.Data, l.Holder.Session, time.UnixMilli(l.Holder.CreatedAt).Format(time.RFC3339), len(l.Waiters))
			}
		}
	}
	list := &cobra.Command{Use: "list", Short: "List the locks: holder, fencing token and queue", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ls, err := lock.NewAdmin(g.server, g.token).Locks(cmd.Context())
			if err != nil {
				return err
			}
			return g.Print(ls, lockTable(ls))
		}}
	var getWait time.Duration
	get := &cobra.Command{Use: "get NAME", Short: "Show who holds the lock NAME (--wait: until someone does)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			deadline := time.Now().Add(getWait)
			for {
				ls, err := lock.NewAdmin(g.server, g.token).Locks(cmd.Context())
				if err != nil {
					return err
				}
				for _, l := range ls {
					if l.Name == strings.Trim(args[0], "/") {
						return g.Print(l, lockTable([]lock.LockInfo{l}))
					}
				}
				if !time.Now().Before(deadline) {
					return fmt.Errorf("nobody holds the lock %s", args[0])
				}
				t := time.NewTimer(100 * time.Millisecond)
				select {
				case <-t.C:
				case <-cmd.Context().Done():
					t.Stop()
					return cmd.Context().Err()
				}
			}
		}}
	get.Flags().DurationVar(&getWait, "wait", 0, "wait this long for the lock to be held")
	release := &cobra.Command{Use: "release NAME", Short: "Force the lock NAME free: delete its holder's node (the holder's lease ends with ErrLockLost)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ls, err := lock.NewAdmin(g.server, g.token).Locks(ctx)
			if err != nil {
				return err
			}
			for _, l := range ls {
				if l.Name == strings.Trim(args[0], "/") {
					c, err := lock.Dial(ctx, lock.Config{Servers: strings.Split(g.rpcTarget(rpcServer), ","), Token: g.token, Owner: hostOwner()})
					if err != nil {
						return err
					}
					defer c.Close()
					if err := c.Delete(ctx, l.Holder.Path); err != nil {
						return err
					}
					fmt.Fprintf(g.Out, "released %s (fence %d, session %s); %d waiting\n", l.Name, l.Holder.Seq, l.Holder.Session, len(l.Waiters))
					return nil
				}
			}
			return fmt.Errorf("nobody holds the lock %s", args[0])
		}}
	var end string
	sessions := &cobra.Command{Use: "sessions", Short: "List live sessions (--end ID ends one: its locks pass on)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			a := lock.NewAdmin(g.server, g.token)
			if end != "" {
				if err := a.EndSession(cmd.Context(), end); err != nil {
					return err
				}
				fmt.Fprintf(g.Out, "session %s ended\n", end)
				return nil
			}
			ss, err := a.Sessions(cmd.Context())
			if err != nil {
				return err
			}
			return g.Print(ss, func(w *tabwriter.Writer) {
				row(w, "SESSION", "OWNER", "PRINCIPAL", "TTL", "EXPIRES", "NODES")
				for _, s := range ss {
					row(w, s.ID, s.Owner, s.Principal, time.Duration(s.TTLMs)*time.Millisecond, time.UnixMilli(s.ExpiresAt).Format(time.RFC3339Nano), s.Nodes)
				}
			})
		}}
	sessions.Flags().StringVar(&end, "end", "", "end this session now")
	cmd.AddCommand(acquire, list, get, release, sessions)
	return cmd
}

// hostOwner labels a CLI session: user@host pid.
func hostOwner() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s@%s pid %d", os.Getenv("USER"), h, os.Getpid())
}
