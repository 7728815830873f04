package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/registry"
)

type svcFlags struct{ namespace, group string }

func (s *svcFlags) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&s.namespace, "namespace", registry.DefaultNamespace, "namespace")
	cmd.Flags().StringVar(&s.group, "group", registry.DefaultGroup, "group")
}

func (s *svcFlags) key(service string) registry.Key {
	return registry.Key{Namespace: s.namespace, Group: s.group, Service: service}
}

func instanceRows(w *tabwriter.Writer, list []*registry.Instance) {
	row(w, "ID", "ADDRESS", "WEIGHT", "ZONE", "HEALTHY", "ENABLED", "KIND", "OWNER", "METADATA")
	for _, in := range list {
		kind := "ephemeral"
		if !in.Ephemeral {
			kind = "persistent"
		}
		var md []string
		for k, v := range in.Metadata {
			md = append(md, k+"="+v)
		}
		row(w, in.ID, in.Addr(), in.Weight, in.Zone, in.Healthy, in.Enabled, kind, in.Owner, strings.Join(md, ","))
	}
}

func newRegistryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "registry", Short: "Service registry: services, instances, watches, drains"}

	var listNS string
	list := &cobra.Command{Use: "list", Short: "List services with instances", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out, err := g.registryAdmin().Services(ctx, listNS)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "NAMESPACE", "GROUP", "SERVICE", "INSTANCES", "HEALTHY")
			for _, s := range out {
				row(w, s.Namespace, s.Group, s.Service, s.Instances, s.Healthy)
			}
		})
	}}
	list.Flags().StringVar(&listNS, "namespace", "", "only this namespace")

	var sf svcFlags
	get := &cobra.Command{Use: "get SERVICE", Short: "Show a service's instances", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		snap, err := g.registryAdmin().Service(ctx, sf.key(args[0]))
		if err != nil {
			return err
		}
		return g.Print(snap, func(w *tabwriter.Writer) { instanceRows(w, snap.Instances) })
	}}
	sf.add(get)

	var rf svcFlags
	var in registry.Instance
	var meta []string
	var persistent, keep bool
	reg := &cobra.Command{Use: "register SERVICE --host H --port P", Short: "Register an instance (persistent, or ephemeral kept alive with --keep)",
		Long: `Registers an instance. A persistent instance (--persistent) is stored and probed by the
servers (TCP connect; metadata probe=http:/path or probe=rpc for other probes). An ephemeral
instance lives by heartbeats: with --keep this command renews it until interrupted, then
deregisters it; without, it expires after 30 s.`,
		Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			in.Namespace, in.Group, in.Service = rf.namespace, rf.group, args[0]
			in.Ephemeral, in.Enabled = !persistent, true
			for _, kv := range meta {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--meta %q: want key=value", kv)
				}
				if in.Metadata == nil {
					in.Metadata = map[string]string{}
				}
				in.Metadata[k] = v
			}
			a := g.registryAdmin()
			out, err := a.Register(ctx, in)
			if err != nil {
				return err
			}
			if err := g.Print(out, func(w *tabwriter.Writer) { fmt.Fprintf(w, "registered %s in %s\n", out.ID, out.Key) }); err != nil {
				return err
			}
			if !keep || !out.Ephemeral {
				return nil
			}
			sig, stop := signal.NotifyContext(ctx, os.Interrupt)
			defer stop()
			k := rf.key(args[0])
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-sig.Done():
					fmt.Fprintf(g.Out, "deregistering %s\n", out.ID)
					dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
					defer cancel()
					return a.Deregister(dctx, k, out.ID)
				case <-t.C:
					if err := a.Heartbeat(ctx, k, out.ID); err != nil {
						fmt.Fprintf(cmd.ErrOrStderr(), "heartbeat: %v; registering again\n", err)
						if again, err := a.Register(ctx, in); err == nil {
							out = again
						}
					}
				}
			}
		}}
	rf.add(reg)
	reg.Flags().StringVar(&in.Host, "host", "", "host (IP or DNS name)")
	reg.Flags().Uint16Var(&in.Port, "port", 0, "port")
	reg.Flags().StringVar(&in.ID, "id", "", "instance id (default host:port)")
	reg.Flags().Uint16Var(&in.Weight, "weight", registry.DefaultWeight, "weight 0–10000")
	reg.Flags().StringVar(&in.Zone, "zone", "", "zone")
	reg.Flags().StringVar(&in.Cluster, "cluster", "", "cluster")
	reg.Flags().StringArrayVar(&meta, "meta", nil, "metadata key=value (repeatable)")
	reg.Flags().BoolVar(&persistent, "persistent", false, "persistent instance (stored, probed) instead of ephemeral")
	reg.Flags().BoolVar(&keep, "keep", false, "renew an ephemeral instance until interrupted")

	var df svcFlags
	dereg := &cobra.Command{Use: "deregister SERVICE ID", Short: "Remove an instance", Args: cobra.ExactArgs(2), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if err := g.registryAdmin().Deregister(ctx, df.key(args[0]), args[1]); err != nil {
			return err
		}
		fmt.Fprintf(g.Out, "deregistered %s\n", args[1])
		return nil
	}}
	df.add(dereg)

	var dr svcFlags
	var undo bool
	var weight int
	drain := &cobra.Command{Use: "drain SERVICE ID", Short: "Take an instance out of traffic (--undo puts it back; --weight sets its weight)",
		Args: cobra.ExactArgs(2), RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			p := registry.Patch{}
			if cmd.Flags().Changed("weight") {
				p.Weight = &weight
			} else {
				enabled := undo
				p.Enabled = &enabled
			}
			out, err := g.registryAdmin().Update(ctx, dr.key(args[0]), args[1], p)
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) { instanceRows(w, []*registry.Instance{&out}) })
		}}
	dr.add(drain)
	drain.Flags().BoolVar(&undo, "undo", false, "enable the instance again")
	drain.Flags().IntVar(&weight, "weight", 0, "set the weight instead (0–10000)")

	var wf svcFlags
	var count int
	watch := &cobra.Command{Use: "watch SERVICE", Short: "Print a service's instances, then every change as it is pushed", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			sig, stop := signal.NotifyContext(ctx, os.Interrupt)
			defer stop()
			a := g.registryAdmin()
			var rev int64
			for n := 0; count == 0 || n < count; {
				snap, err := a.Watch(sig, wf.key(args[0]), rev, 30*time.Second)
				if sig.Err() != nil {
					return nil
				}
				if err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "watch: %v; retrying\n", err)
					select {
					case <-sig.Done():
						return nil
					case <-time.After(time.Second):
					}
					continue
				}
				switch {
				case snap.Full:
					fmt.Fprintf(g.Out, "revision %d: %d instances\n", snap.Revision, len(snap.Instances))
					for _, in := range snap.Instances {
						fmt.Fprintf(g.Out, "  %s %s weight=%d healthy=%v enabled=%v\n", in.ID, in.Addr(), in.Weight, in.Healthy, in.Enabled)
					}
					n++
				case len(snap.Events) > 0:
					for _, ev := range snap.Events {
						fmt.Fprintf(g.Out, "revision %d: %s %s %s weight=%d healthy=%v enabled=%v\n", ev.Revision, ev.Type, ev.Instance.ID,
							ev.Instance.Addr(), ev.Instance.Weight, ev.Instance.Healthy, ev.Instance.Enabled)
					}
					n++
				}
				rev = snap.Revision
			}
			return nil
		}}
	wf.add(watch)
	watch.Flags().IntVar(&count, "count", 0, "stop after this many updates (0: until interrupted)")

	status := &cobra.Command{Use: "status", Short: "Registry counts and self-preservation state", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		st, err := g.registryAdmin().Status(ctx)
		if err != nil {
			return err
		}
		return g.Print(st, func(w *tabwriter.Writer) {
			row(w, "NODE", "SERVICES", "INSTANCES", "EPHEMERAL", "SELF-PRESERVATION", "RENEWALS", "EXPECTED", "WATCHERS", "MEMBERS")
			row(w, st.Node, st.Services, st.Instances, st.Ephemeral, st.SelfPreservation, st.Renewals, st.ExpectedRenewals, st.Watchers, strings.Join(st.Members, ","))
		})
	}}
	cmd.AddCommand(list, get, reg, dereg, drain, watch, status)
	return cmd
}
