package main

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/internal/auth"
)

func newAuthCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "auth", Short: "Users, roles, API tokens and the audit log"}
	whoami := &cobra.Command{Use: "whoami", Short: "Show who the token belongs to", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		p, err := g.authAdmin().WhoAmI(ctx)
		if err != nil {
			return err
		}
		return g.Print(p, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "%s", p.Name)
			if p.TokenEnv != "" {
				fmt.Fprintf(w, " (token limited to env %s)", p.TokenEnv)
			}
			fmt.Fprintln(w)
			for _, b := range p.Bindings {
				row(w, "  "+string(b.Role), "env="+b.Env, "app="+b.App, "ns="+b.NS)
			}
		})
	}}
	parseBinding := func(s string) (auth.Binding, error) {
		// role[:env[:app[:ns]]]
		parts := strings.Split(s, ":")
		b := auth.Binding{Role: auth.Role(parts[0]), Env: "*", App: "*", NS: "*"}
		if _, err := auth.ParseRole(parts[0]); err != nil {
			return b, err
		}
		if len(parts) > 4 {
			return b, fmt.Errorf("role %q: want role[:env[:app[:ns]]]", s)
		}
		dst := []*string{&b.Env, &b.App, &b.NS}
		for i, p := range parts[1:] {
			if p != "" {
				*dst[i] = p
			}
		}
		return b, nil
	}
	var password string
	var tokenOnly bool
	var roles []string
	userCreate := &cobra.Command{Use: "create-user NAME", Short: "Create a user with roles (role[:env[:app[:ns]]], e.g. releaser:prod:demo)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var bs []auth.Binding
			for _, r := range roles {
				b, err := parseBinding(r)
				if err != nil {
					return err
				}
				bs = append(bs, b)
			}
			u, err := g.authAdmin().CreateUser(ctx, auth.UserSpec{Name: args[0], Password: password, TokenOnly: tokenOnly, Bindings: bs})
			if err != nil {
				return err
			}
			return g.Print(u, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "created user %s with %d role binding(s)\n", u.Name, len(u.Bindings))
			})
		}}
	userCreate.Flags().StringVar(&password, "password", "", "console password (at least 8 characters)")
	userCreate.Flags().BoolVar(&tokenOnly, "token-only", false, "no password: the user signs in only with API tokens (services, brokers)")
	userCreate.Flags().StringSliceVar(&roles, "role", nil, "role binding role[:env[:app[:ns]]] (repeatable)")
	users := &cobra.Command{Use: "users", Short: "List users", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out, err := g.authAdmin().Users(ctx)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "USER", "ROLES")
			for _, u := range out {
				var rs []string
				for _, b := range u.Bindings {
					rs = append(rs, fmt.Sprintf("%s:%s:%s:%s", b.Role, b.Env, b.App, b.NS))
				}
				row(w, u.Name, strings.Join(rs, " "))
			}
		})
	}}
	grant := func(verb string) *cobra.Command {
		return &cobra.Command{Use: verb + " USER ROLE", Short: strings.ToUpper(verb[:1]) + verb[1:] + " a role binding role[:env[:app[:ns]]]", Args: cobra.ExactArgs(2),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx := cmd.Context()
				b, err := parseBinding(args[1])
				if err != nil {
					return err
				}
				a := g.authAdmin()
				change := a.Grant
				if verb == "revoke" {
					change = a.Revoke
				}
				if err := change(ctx, args[0], b); err != nil {
					return err
				}
				fmt.Fprintf(g.Out, "%sd %s on env=%s app=%s ns=%s for %s\n", strings.TrimSuffix(verb, "e"), b.Role, b.Env, b.App, b.NS, args[0])
				return nil
			}}
	}
	var tokUser, tokEnv string
	var tokTTL time.Duration
	tokenCreate := &cobra.Command{Use: "create-token NAME", Short: "Create an API token (printed once)", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		spec := auth.TokenSpec{User: tokUser, Name: args[0], Env: tokEnv}
		if tokTTL < 0 {
			return fmt.Errorf("--ttl %s: want a positive duration", tokTTL)
		}
		if tokTTL > 0 {
			spec.TTL = tokTTL.String()
		}
		out, err := g.authAdmin().CreateToken(ctx, spec)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) { fmt.Fprintln(w, out.Token) })
	}}
	tokenCreate.Flags().StringVar(&tokUser, "user", "", "owner (default: you)")
	tokenCreate.Flags().StringVar(&tokEnv, "env", "", "limit the token to one environment")
	tokenCreate.Flags().DurationVar(&tokTTL, "ttl", 0, "expire the token after this long, e.g. 720h (default: never)")
	tokens := &cobra.Command{Use: "tokens", Short: "List API tokens", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out, err := g.authAdmin().Tokens(ctx)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "ID", "USER", "NAME", "ENV", "STATE", "LAST-USED", "EXPIRES")
			now := time.Now()
			for _, t := range out {
				last, expires, state := "", "never", "active"
				if t.LastUsedAt > 0 {
					last = time.UnixMilli(t.LastUsedAt).UTC().Format(time.RFC3339)
				}
				if t.ExpiresAt > 0 {
					expires = time.UnixMilli(t.ExpiresAt).UTC().Format(time.RFC3339)
				}
				switch {
				case t.Revoked:
					state = "revoked"
				case t.Expired(now):
					state = "expired"
				}
				row(w, t.ID, t.User, t.Name, t.Env, state, last, expires)
			}
		})
	}}
	revokeToken := &cobra.Command{Use: "revoke-token ID", Short: "Revoke an API token", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		id, err := strconv.ParseInt(args[0], 10, 64)
		if err != nil {
			return fmt.Errorf("token id %q is not a number", args[0])
		}
		if err := g.authAdmin().RevokeToken(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(g.Out, "token %s revoked\n", args[0])
		return nil
	}}
	setPassword := &cobra.Command{Use: "set-password USER", Short: "Change a password, read from standard input",
		Long: `Change a user's password. The passwords are read from standard input, never from
flags: for your own password, the current one on the first line and the new one on
the second (a user without a password gives an unrestricted API token of theirs as
the current one); an unrestricted admin setting another user's password gives only
the new one. Every other console session of the user ends.`,
		Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			a := g.authAdmin()
			me, err := a.WhoAmI(ctx)
			if err != nil {
				return err
			}
			sc := bufio.NewScanner(cmd.InOrStdin())
			next := func(what string) (string, error) {
				if !sc.Scan() {
					return "", fmt.Errorf("set-password: standard input ended before the %s password", what)
				}
				return strings.TrimRight(sc.Text(), "\r"), nil
			}
			var pc auth.PasswordChange
			if me.Name == args[0] {
				if pc.Current, err = next("current"); err != nil {
					return err
				}
			}
			if pc.Password, err = next("new"); err != nil {
				return err
			}
			if err := a.ChangePassword(ctx, args[0], pc); err != nil {
				return err
			}
			fmt.Fprintf(g.Out, "password of %s changed; their other sessions ended\n", args[0])
			return nil
		}}
	able := func(verb string) *cobra.Command {
		return &cobra.Command{Use: verb + "-user USER", Short: map[string]string{"disable": "Disable a user: their tokens stop working and their sessions end", "enable": "Enable a disabled user"}[verb],
			Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
				if err := g.authAdmin().SetDisabled(cmd.Context(), args[0], verb == "disable"); err != nil {
					return err
				}
				fmt.Fprintf(g.Out, "user %s %sd\n", args[0], verb)
				return nil
			}}
	}
	endSessions := &cobra.Command{Use: "end-sessions USER", Short: "Sign a user out of every console session", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		n, err := g.authAdmin().EndSessions(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(g.Out, "%d session(s) of %s ended\n", n, args[0])
		return nil
	}}
	var auditLimit int
	var auditAction, auditActor string
	auditCmd := &cobra.Command{Use: "audit", Short: "Show the audit log, newest first", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out, err := g.authAdmin().Audit(ctx, auth.AuditFilter{Limit: auditLimit, ActionPrefix: auditAction, Actor: auditActor})
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "WHEN", "ACTOR", "ACTION", "RESOURCE", "FROM")
			for _, e := range out {
				row(w, time.UnixMilli(e.At).UTC().Format(time.RFC3339), e.Actor, e.Action, e.Resource, e.Remote)
			}
		})
	}}
	auditCmd.Flags().IntVar(&auditLimit, "limit", 50, "entries")
	auditCmd.Flags().StringVar(&auditAction, "action", "", "action prefix, e.g. config.publish")
	auditCmd.Flags().StringVar(&auditActor, "actor", "", "actor")
	cmd.AddCommand(whoami, userCreate, users, grant("grant"), grant("revoke"), setPassword, able("disable"), able("enable"), endSessions,
		tokenCreate, tokens, revokeToken, auditCmd)
	return cmd
}
