package main

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/config"
)

type coordFlags struct {
	env, app, cluster, ns string
}

func (c *coordFlags) add(cmd *cobra.Command, withNS bool) {
	cmd.Flags().StringVar(&c.env, "env", envOr("TANGRAM_ENV", "dev"), "environment")
	cmd.Flags().StringVar(&c.app, "app", os.Getenv("TANGRAM_APP"), "app")
	cmd.Flags().StringVar(&c.cluster, "cluster", config.DefaultCluster, "cluster")
	if withNS {
		cmd.Flags().StringVar(&c.ns, "ns", config.DefaultNamespace, "namespace")
	}
}

func (c *coordFlags) check() error {
	if c.app == "" {
		return fmt.Errorf("--app is required (or set TANGRAM_APP)")
	}
	return nil
}

func (c *coordFlags) co() config.Coord {
	return config.Coord{Env: c.env, App: c.app, Cluster: c.cluster, NS: c.ns}
}

func (c *coordFlags) coord() string { return c.env + "/" + c.app + "/" + c.cluster + "/" + c.ns }

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Config center: apps, namespaces, items, releases, gray, approvals"}

	// Apps, envs, clusters, namespaces.
	var appDesc, appOwner string
	createApp := &cobra.Command{Use: "create-app NAME", Short: "Create an app (with an 'application' namespace in every environment)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			a, err := g.configAdmin().CreateApp(ctx, config.App{Name: args[0], Description: appDesc, Owner: appOwner})
			if err != nil {
				return err
			}
			return g.Print(a, func(w *tabwriter.Writer) { fmt.Fprintf(w, "created app %s\n", a.Name) })
		}}
	createApp.Flags().StringVar(&appDesc, "description", "", "description")
	createApp.Flags().StringVar(&appOwner, "owner", "", "owner (default: you)")

	apps := &cobra.Command{Use: "apps", Short: "List apps", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out, err := g.configAdmin().Apps(ctx)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "APP", "OWNER", "DESCRIPTION")
			for _, a := range out {
				row(w, a.Name, a.Owner, a.Description)
			}
		})
	}}

	var envDesc string
	var envEmergency bool
	createEnv := &cobra.Command{Use: "create-env NAME", Short: "Create an environment", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		e, err := g.configAdmin().CreateEnv(ctx, config.Env{Name: args[0], Description: envDesc, EmergencyPublish: envEmergency})
		if err != nil {
			return err
		}
		return g.Print(e, func(w *tabwriter.Writer) { fmt.Fprintf(w, "created environment %s\n", e.Name) })
	}}
	createEnv.Flags().StringVar(&envDesc, "description", "", "description")
	createEnv.Flags().BoolVar(&envEmergency, "emergency-publish", true, "allow emergency publishes that bypass approvals")

	var upDesc string
	var upEmergency bool
	updateEnv := &cobra.Command{Use: "update-env NAME", Short: "Change an environment's description or emergency-publish switch", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		cur, err := g.configAdmin().Envs(ctx)
		if err != nil {
			return err
		}
		var e *config.Env
		for i := range cur {
			if cur[i].Name == args[0] {
				e = &cur[i]
			}
		}
		if e == nil {
			return fmt.Errorf("environment %q not found", args[0])
		}
		if cmd.Flags().Changed("description") {
			e.Description = upDesc
		}
		if cmd.Flags().Changed("emergency-publish") {
			e.EmergencyPublish = upEmergency
		}
		out, err := g.configAdmin().UpdateEnv(ctx, *e)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "environment %s: emergency publish %v\n", out.Name, out.EmergencyPublish)
		})
	}}
	updateEnv.Flags().StringVar(&upDesc, "description", "", "description")
	updateEnv.Flags().BoolVar(&upEmergency, "emergency-publish", true, "allow emergency publishes that bypass approvals")

	envs := &cobra.Command{Use: "envs", Short: "List environments", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		out, err := g.configAdmin().Envs(ctx)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "ENV", "EMERGENCY-PUBLISH", "DESCRIPTION")
			for _, e := range out {
				row(w, e.Name, e.EmergencyPublish, e.Description)
			}
		})
	}}

	var cc coordFlags
	createCluster := &cobra.Command{Use: "create-cluster NAME", Short: "Create a cluster (e.g. a data centre) of an app", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if err := cc.check(); err != nil {
			return err
		}
		if err := g.configAdmin().CreateCluster(ctx, cc.env, cc.app, args[0]); err != nil {
			return err
		}
		fmt.Fprintf(g.Out, "created cluster %s of %s/%s\n", args[0], cc.env, cc.app)
		return nil
	}}
	cc.add(createCluster, false)

	var nc coordFlags
	var nsFormat, nsLink string
	var nsPublic bool
	createNS := &cobra.Command{Use: "create-ns NAME", Short: "Create a namespace (properties, yaml, json or text; public; or linked to a public one)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := nc.check(); err != nil {
				return err
			}
			ns, err := g.configAdmin().CreateNamespace(ctx, nc.env, nc.app, nc.cluster, config.NamespaceSpec{Name: args[0], Format: nsFormat, Public: nsPublic, LinkApp: nsLink})
			if err != nil {
				return err
			}
			return g.Print(ns, func(w *tabwriter.Writer) { fmt.Fprintf(w, "created namespace %s (%s)\n", ns.Coord, ns.Format) })
		}}
	nc.add(createNS, false)
	createNS.Flags().StringVar(&nsFormat, "format", "", "properties, yaml, json or text (default: from the name's suffix)")
	createNS.Flags().BoolVar(&nsPublic, "public", false, "a public namespace other apps can link to")
	createNS.Flags().StringVar(&nsLink, "link-app", "", "link to the public namespace of this name owned by another app")

	var lc coordFlags
	listNS := &cobra.Command{Use: "namespaces", Short: "List an app's namespaces in a cluster", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if err := lc.check(); err != nil {
			return err
		}
		out, err := g.configAdmin().Namespaces(ctx, lc.env, lc.app, lc.cluster)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "NAMESPACE", "FORMAT", "RELEASE", "DRAFT-VERSION", "PUBLIC", "LINK-APP", "APPROVAL")
			for _, n := range out {
				row(w, n.NS, n.Format, n.ReleaseID, n.DraftVersion, n.Public, n.LinkApp, n.RequireApproval)
			}
		})
	}}
	lc.add(listNS, false)

	cmd.AddCommand(createApp, apps, createEnv, updateEnv, envs, createCluster, createNS, listNS)
	cmd.AddCommand(itemCmds(g)...)
	cmd.AddCommand(releaseCmds(g)...)
	cmd.AddCommand(grayCmd(g), watchCmd(g))
	return cmd
}

func itemCmds(g *globals) []*cobra.Command {
	var sc coordFlags
	var secret bool
	var comment string
	var version int64
	set := &cobra.Command{Use: "set KEY VALUE", Short: "Set a key in the draft (use key 'content' or --file for yaml/json/text namespaces)", Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := sc.check(); err != nil {
				return err
			}
			value, err := valueArg(cmd, args)
			if err != nil {
				return err
			}
			e := config.ItemEdit{Value: value, Secret: secret, Comment: comment}
			if cmd.Flags().Changed("version") {
				e.Version = &version
			}
			v, err := g.configAdmin().SetItem(ctx, sc.co(), args[0], e)
			if err != nil {
				return err
			}
			return g.Print(config.DraftVersion{DraftVersion: v}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "set %s in the draft of %s (draft version %d); publish to release it\n", args[0], sc.coord(), v)
			})
		}}
	sc.add(set, true)
	set.Flags().BoolVar(&secret, "secret", false, "store encrypted and show masked")
	set.Flags().StringVar(&comment, "comment", "", "comment")
	set.Flags().Int64Var(&version, "version", 0, "fail unless the draft is at this version (optimistic concurrency)")
	set.Flags().String("file", "", "read the value from this file ('-' for stdin)")

	var gc coordFlags
	var draft, reveal bool
	get := &cobra.Command{Use: "get [KEY]", Short: "Print a released value (or all items with no key)", Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := gc.check(); err != nil {
				return err
			}
			if reveal {
				cfg, err := g.configAdmin().Served(ctx, gc.co())
				if err != nil {
					return err
				}
				if len(args) == 1 {
					v, ok := cfg.Items[args[0]]
					if !ok {
						return fmt.Errorf("key %q not found in %s", args[0], gc.coord())
					}
					fmt.Fprintln(g.Out, v)
					return nil
				}
				return g.Print(cfg.Items, func(w *tabwriter.Writer) {
					for _, k := range slices.Sorted(maps.Keys(cfg.Items)) {
						row(w, k, cfg.Items[k])
					}
				})
			}
			if len(args) == 1 {
				it, err := g.configAdmin().Item(ctx, gc.co(), args[0], draft)
				if err != nil {
					return err
				}
				if g.Format != "table" {
					return g.Print(it, nil)
				}
				fmt.Fprintln(g.Out, it.Value)
				return nil
			}
			out, err := g.configAdmin().Namespace(ctx, gc.co())
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) {
				row(w, "KEY", "DRAFT VALUE", "SECRET", "UPDATED-BY")
				for _, it := range out.Items {
					row(w, it.Key, it.Value, it.Secret, it.UpdatedBy)
				}
				if len(out.Pending) > 0 {
					fmt.Fprintf(w, "\n%d unpublished change(s)\n", len(out.Pending))
				}
			})
		}}
	gc.add(get, true)
	get.Flags().BoolVar(&draft, "draft", false, "read the draft instead of the current release")
	get.Flags().BoolVar(&reveal, "reveal", false, "read as a client does (secrets in plaintext; needs read permission)")

	var dc coordFlags
	del := &cobra.Command{Use: "delete KEY", Short: "Delete a key from the draft", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if err := dc.check(); err != nil {
			return err
		}
		v, err := g.configAdmin().DeleteItem(ctx, dc.co(), args[0])
		if err != nil {
			return err
		}
		return g.Print(config.DraftVersion{DraftVersion: v}, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "deleted %s from the draft of %s (draft version %d)\n", args[0], dc.coord(), v)
		})
	}}
	dc.add(del, true)

	var ic coordFlags
	var impFormat string
	var merge bool
	imp := &cobra.Command{Use: "import FILE", Short: "Import a .properties/.yaml/.json file into the draft ('-' for stdin)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := ic.check(); err != nil {
				return err
			}
			data, err := readFileArg(cmd, args[0])
			if err != nil {
				return err
			}
			f := impFormat
			if f == "" && args[0] != "-" {
				f = string(config.FormatFromName(args[0]))
			}
			out, err := g.configAdmin().Import(ctx, ic.co(), config.ImportRequest{Format: f, Data: data, Merge: merge})
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "imported %d item(s) into the draft of %s (draft version %d); publish to release\n", out.Items, ic.coord(), out.DraftVersion)
			})
		}}
	ic.add(imp, true)
	imp.Flags().StringVar(&impFormat, "format", "", "file format: properties, yaml or json (default: from the file name)")
	imp.Flags().BoolVar(&merge, "merge", false, "keep draft keys the file does not mention (default: replace the draft)")

	var ec coordFlags
	var expFormat string
	var expDraft, expReveal bool
	exp := &cobra.Command{Use: "export", Short: "Export the current release (or draft) as a file to stdout", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := ec.check(); err != nil {
				return err
			}
			out, err := g.configAdmin().Export(ctx, ec.co(), config.ExportOptions{Format: expFormat, Draft: expDraft, Reveal: expReveal})
			if err != nil {
				return err
			}
			_, err = io.WriteString(g.Out, out)
			return err
		}}
	ec.add(exp, true)
	exp.Flags().StringVar(&expFormat, "format", "", "properties, yaml or json (properties namespaces only)")
	exp.Flags().BoolVar(&expDraft, "draft", false, "export the draft")
	exp.Flags().BoolVar(&expReveal, "reveal", false, "include secret values in plaintext (needs edit permission)")

	var stc coordFlags
	var reqApproval, sepPublisher bool
	settings := &cobra.Command{Use: "settings", Short: "Set a namespace's release rules (approvals, separate publisher)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := stc.check(); err != nil {
				return err
			}
			var set config.Settings
			if cmd.Flags().Changed("require-approval") {
				set.RequireApproval = &reqApproval
			}
			if cmd.Flags().Changed("separate-publisher") {
				set.SeparatePublisher = &sepPublisher
			}
			ns, err := g.configAdmin().UpdateSettings(ctx, stc.co(), set)
			if err != nil {
				return err
			}
			return g.Print(ns, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "%s: require_approval=%v separate_publisher=%v\n", ns.Coord, ns.RequireApproval, ns.SeparatePublisher)
			})
		}}
	stc.add(settings, true)
	settings.Flags().BoolVar(&reqApproval, "require-approval", false, "releases must be requested and approved by another user")
	settings.Flags().BoolVar(&sepPublisher, "separate-publisher", false, "the publisher must differ from the last editor")

	var inc coordFlags
	instances := &cobra.Command{Use: "instances", Short: "List client instances and the release each holds", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := inc.check(); err != nil {
				return err
			}
			out, err := g.configAdmin().Instances(ctx, inc.co())
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) {
				row(w, "INSTANCE", "STATE", "IP", "LABELS", "RELEASE", "GRAY", "LAST-SEEN")
				for _, in := range out {
					state := "offline"
					if in.Online {
						state = "online"
					}
					row(w, in.Instance, state, in.IP, in.Labels, "#"+strconv.FormatInt(in.ReleaseID, 10), in.Gray, time.UnixMilli(in.LastSeen).UTC().Format(time.RFC3339))
				}
			})
		}}
	inc.add(instances, true)
	return []*cobra.Command{set, get, del, imp, exp, settings, instances}
}

func valueArg(cmd *cobra.Command, args []string) (string, error) {
	file, _ := cmd.Flags().GetString("file")
	switch {
	case file != "" && len(args) == 2:
		return "", fmt.Errorf("give VALUE or --file, not both")
	case file != "":
		return readFileArg(cmd, file)
	case len(args) == 2:
		return args[1], nil
	}
	return "", fmt.Errorf("missing VALUE (or --file)")
}

func readFileArg(cmd *cobra.Command, name string) (string, error) {
	var b []byte
	var err error
	if name == "-" {
		b, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), 8<<20))
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", name, err)
	}
	return string(b), nil
}

func printRelease(g *globals, rel config.Release, verb string) error {
	return g.Print(rel, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "%s release #%d (the namespace's v%d, %s): %s\n", verb, rel.ID, rel.Version, rel.Kind, rel.Comment)
		for _, c := range rel.Changes {
			row(w, "  "+c.Op, c.Key, c.Old, "→", c.New)
		}
	})
}

func releaseCmds(g *globals) []*cobra.Command {
	var pc coordFlags
	var msg string
	var emergency bool
	publish := &cobra.Command{Use: "publish", Short: "Release the draft as a new immutable release", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := pc.check(); err != nil {
				return err
			}
			rel, err := g.configAdmin().Publish(ctx, pc.co(), config.PublishRequest{Comment: msg, Emergency: emergency})
			if err != nil {
				return err
			}
			return printRelease(g, rel, "published")
		}}
	pc.add(publish, true)
	publish.Flags().StringVarP(&msg, "message", "m", "", "release comment")
	publish.Flags().BoolVar(&emergency, "emergency", false, "bypass a required approval (audited as an emergency publish)")

	var rc coordFlags
	var to int64
	var rmsg string
	rollback := &cobra.Command{Use: "rollback", Short: "Return to the previous release (or --to ID); recorded as a new release", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := rc.check(); err != nil {
				return err
			}
			rel, err := g.configAdmin().Rollback(ctx, rc.co(), config.RollbackRequest{To: to, Comment: rmsg})
			if err != nil {
				return err
			}
			return printRelease(g, rel, "rolled back with")
		}}
	rc.add(rollback, true)
	rollback.Flags().Int64Var(&to, "to", 0, "release id to return to (default: the previous release)")
	rollback.Flags().StringVarP(&rmsg, "message", "m", "", "comment")

	var hc coordFlags
	var limit int
	history := &cobra.Command{Use: "history", Short: "List releases, newest first, with their changes", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := hc.check(); err != nil {
				return err
			}
			out, err := g.configAdmin().Releases(ctx, hc.co(), limit)
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) {
				row(w, "RELEASE", "VERSION", "KIND", "AUTHOR", "WHEN", "CHANGES", "COMMENT")
				for _, r := range out {
					var ch []string
					for _, c := range r.Changes {
						ch = append(ch, c.Op[:1]+":"+c.Key)
					}
					row(w, "#"+strconv.FormatInt(r.ID, 10), "v"+strconv.FormatInt(r.Version, 10), r.Kind, r.Author, time.UnixMilli(r.CreatedAt).UTC().Format(time.RFC3339), strings.Join(ch, " "), r.Comment)
				}
			})
		}}
	hc.add(history, true)
	history.Flags().IntVar(&limit, "limit", 20, "how many releases")

	var fc coordFlags
	var from, dto string
	diff := &cobra.Command{Use: "diff", Short: "Diff two releases (default: current release → draft)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := fc.check(); err != nil {
				return err
			}
			out, err := g.configAdmin().Diff(ctx, fc.co(), from, dto)
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) {
				if len(out) == 0 {
					fmt.Fprintln(w, "no differences")
				}
				for _, c := range out {
					row(w, c.Op, c.Key, c.Old, "→", c.New)
				}
			})
		}}
	fc.add(diff, true)
	diff.Flags().StringVar(&from, "from", "current", "release id or 'current'")
	diff.Flags().StringVar(&dto, "to", "draft", "release id or 'draft'")

	var qc coordFlags
	var qmsg string
	request := &cobra.Command{Use: "request", Short: "Request approval to release the draft", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := qc.check(); err != nil {
				return err
			}
			out, err := g.configAdmin().RequestRelease(ctx, qc.co(), qmsg)
			if err != nil {
				return err
			}
			return g.Print(out, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "release request #%d filed for %s; another releaser approves it with: tangram config approve %d\n", out.ID, qc.coord(), out.ID)
				for _, c := range out.Changes {
					row(w, "  "+c.Op, c.Key, c.Old, "→", c.New)
				}
			})
		}}
	qc.add(request, true)
	request.Flags().StringVarP(&qmsg, "message", "m", "", "comment")

	var lqc coordFlags
	var status string
	requests := &cobra.Command{Use: "requests", Short: "List release requests", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if err := lqc.check(); err != nil {
			return err
		}
		out, err := g.configAdmin().Requests(ctx, lqc.co(), status)
		if err != nil {
			return err
		}
		return g.Print(out, func(w *tabwriter.Writer) {
			row(w, "ID", "BY", "STATUS", "REVIEWER", "CHANGES", "COMMENT")
			for _, r := range out {
				row(w, r.ID, r.RequestedBy, r.Status, r.Reviewer, len(r.Changes), r.Comment)
			}
		})
	}}
	lqc.add(requests, true)
	requests.Flags().StringVar(&status, "status", "", "pending, approved, rejected or cancelled")

	decide := func(verb string) *cobra.Command {
		var c coordFlags
		var m string
		cmd := &cobra.Command{Use: verb + " ID", Short: strings.ToUpper(verb[:1]) + verb[1:] + " a release request", Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx := cmd.Context()
				if err := c.check(); err != nil {
					return err
				}
				id, err := strconv.ParseInt(args[0], 10, 64)
				if err != nil {
					return fmt.Errorf("request id %q is not a number (see tangram config requests)", args[0])
				}
				a, d := g.configAdmin(), config.Decision{Comment: m}
				switch verb {
				case "approve":
					rel, err := a.Approve(ctx, c.co(), id, d)
					if err != nil {
						return err
					}
					return printRelease(g, rel, "approved; published")
				case "reject":
					err = a.Reject(ctx, c.co(), id, d)
				default:
					err = a.Cancel(ctx, c.co(), id, d)
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(g.Out, "request %s: %s\n", args[0], verb)
				return nil
			}}
		c.add(cmd, true)
		cmd.Flags().StringVarP(&m, "message", "m", "", "comment")
		return cmd
	}
	return []*cobra.Command{publish, rollback, history, diff, request, requests, decide("approve"), decide("reject"), decide("cancel")}
}

func grayCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "gray", Short: "Gray release: changes seen only by selected clients"}
	printGray := func(gr config.Gray) error {
		return g.Print(gr, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "rules: ips=%v labels=%v instances=%v percent=%d\n", gr.Rules.IPs, gr.Rules.Labels, gr.Rules.Instances, gr.Rules.Percent)
			if gr.Published != nil {
				fmt.Fprintf(w, "published as release #%d\n", gr.Published.ReleaseID)
			} else {
				fmt.Fprintln(w, "not published")
			}
			for _, c := range gr.Changes {
				row(w, "  "+c.Op, c.Key, c.Old, "→", c.New)
			}
		})
	}
	edit := func(use, short string, nargs cobra.PositionalArgs, build func(cmd *cobra.Command, args []string) (config.GrayEdit, error), extra func(*cobra.Command)) *cobra.Command {
		var c coordFlags
		sub := &cobra.Command{Use: use, Short: short, Args: nargs, RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := c.check(); err != nil {
				return err
			}
			e, err := build(cmd, args)
			if err != nil {
				return err
			}
			gr, err := g.configAdmin().EditGray(ctx, c.co(), e)
			if err != nil {
				return err
			}
			return printGray(gr)
		}}
		c.add(sub, true)
		if extra != nil {
			extra(sub)
		}
		return sub
	}
	set := edit("set KEY VALUE", "Set a key in the gray branch", cobra.RangeArgs(1, 2), func(cmd *cobra.Command, args []string) (config.GrayEdit, error) {
		v, err := valueArg(cmd, args)
		secret, _ := cmd.Flags().GetBool("secret")
		return config.GrayEdit{Set: []config.Item{{Key: args[0], Value: v, Secret: secret}}}, err
	}, func(c *cobra.Command) {
		c.Flags().String("file", "", "read the value from this file")
		c.Flags().Bool("secret", false, "secret value")
	})
	del := edit("delete KEY", "Delete a key in the gray branch (gray clients will not see it)", cobra.ExactArgs(1), func(cmd *cobra.Command, args []string) (config.GrayEdit, error) {
		return config.GrayEdit{Delete: []string{args[0]}}, nil
	}, nil)
	unset := edit("unset KEY", "Drop a key from the gray branch (gray clients see the main value)", cobra.ExactArgs(1), func(cmd *cobra.Command, args []string) (config.GrayEdit, error) {
		return config.GrayEdit{Unset: []string{args[0]}}, nil
	}, nil)
	rules := edit("rules", "Set which clients see the gray release", cobra.NoArgs, func(cmd *cobra.Command, args []string) (config.GrayEdit, error) {
		ips, _ := cmd.Flags().GetStringSlice("ip")
		labels, _ := cmd.Flags().GetStringSlice("label")
		inst, _ := cmd.Flags().GetStringSlice("instance")
		pct, _ := cmd.Flags().GetInt("percent")
		return config.GrayEdit{Rules: &config.Rules{IPs: ips, Labels: labels, Instances: inst, Percent: pct}}, nil
	}, func(c *cobra.Command) {
		c.Flags().StringSlice("ip", nil, "client IPs or CIDRs")
		c.Flags().StringSlice("label", nil, "client labels")
		c.Flags().StringSlice("instance", nil, "client instance ids")
		c.Flags().Int("percent", 0, "stable percentage (0-100) of client instances")
	})
	var sc coordFlags
	show := &cobra.Command{Use: "show", Short: "Show the gray branch", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if err := sc.check(); err != nil {
			return err
		}
		gr, err := g.configAdmin().Gray(ctx, sc.co())
		if err != nil {
			return err
		}
		return printGray(gr)
	}}
	sc.add(show, true)
	action := func(verb, short string) *cobra.Command {
		var c coordFlags
		var m string
		var emergency bool
		sub := &cobra.Command{Use: verb, Short: short, Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := c.check(); err != nil {
				return err
			}
			a := g.configAdmin()
			if verb == "abandon" {
				if err := a.AbandonGray(ctx, c.co()); err != nil {
					return err
				}
				fmt.Fprintf(g.Out, "gray branch of %s abandoned\n", c.coord())
				return nil
			}
			req := config.PublishRequest{Comment: m, Emergency: emergency}
			publish := a.PublishGray
			if verb == "promote" {
				publish = a.PromoteGray
			}
			rel, err := publish(ctx, c.co(), req)
			if err != nil {
				return err
			}
			return printRelease(g, rel, "gray "+verb+":")
		}}
		c.add(sub, true)
		sub.Flags().StringVarP(&m, "message", "m", "", "comment")
		if verb == "promote" {
			sub.Flags().BoolVar(&emergency, "emergency", false, "bypass a required approval")
		}
		return sub
	}
	cmd.AddCommand(set, del, unset, rules, show, action("publish", "Publish the gray branch to the selected clients"),
		action("promote", "Merge the gray branch into the main release for everyone"), action("abandon", "Drop the gray branch"))
	return cmd
}

func watchCmd(g *globals) *cobra.Command {
	var c coordFlags
	var nss []string
	var cacheDir string
	var labels []string
	cmd := &cobra.Command{Use: "watch", Short: "Run a config client: print the configuration, then every change as it is pushed", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := c.check(); err != nil {
				return err
			}
			if len(nss) == 0 {
				nss = []string{c.ns}
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			cl, err := config.NewClient(ctx, config.ClientConfig{Servers: strings.Split(g.server, ","), Token: g.token, Env: c.env, App: c.app, Cluster: c.cluster,
				Namespaces: nss, CacheDir: cacheDir, Labels: labels, Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil))})
			if err != nil {
				return err
			}
			defer cl.Close()
			for _, ns := range nss {
				src := "server"
				if cl.FromCache(ns) {
					src = "disk copy"
				}
				fmt.Fprintf(g.Out, "# %s/%s/%s/%s %s (from %s)\n", c.env, c.app, c.cluster, ns, config.DescribeReleaseKey(cl.ReleaseKey(ns)), src)
				snap := cl.Snapshot(ns)
				for _, k := range slices.Sorted(maps.Keys(snap)) {
					fmt.Fprintf(g.Out, "%s = %s\n", k, snap[k])
				}
			}
			cl.OnChange(func(ev config.ChangeEvent) {
				fmt.Fprintf(g.Out, "# %s changed (%s) at %s\n", ev.NS, config.DescribeReleaseKey(cl.ReleaseKey(ev.NS)), time.Now().Format(time.TimeOnly))
				for _, ch := range ev.Changes {
					fmt.Fprintf(g.Out, "%s %s: %q -> %q\n", ch.Op, ch.Key, ch.Old, ch.New)
				}
			})
			<-ctx.Done()
			return nil
		}}
	c.add(cmd, true)
	cmd.Flags().StringSliceVar(&nss, "namespaces", nil, "namespaces to watch (default: --ns)")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "disk copy directory (default: user cache dir)")
	cmd.Flags().StringSliceVar(&labels, "label", nil, "client labels for gray rules")
	return cmd
}
