package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/shard"
	"github.com/tangram-dev/tangram/shard/sqldriver"
)

// newShardMigrateCmd is `tangram shard migrate`: online resharding,
// driven through the config-center namespace every driver and proxy
// reads its rules from.
func newShardMigrateCmd(g *globals) *cobra.Command {
	var env, app, cluster, ns, toPath, rulesPath, step string
	var waitFor, settle time.Duration
	var chunk int
	cmd := &cobra.Command{
		Use:   "migrate --app APP --namespace NS --to RULES.yaml [--step STEP]",
		Short: "Move tables to a new layout under load: double writes, copy and verify, switch reads, finish (or roll back)",
		Long: `Online resharding in the three switches, each published to the rules namespace and
waited for until every online instance (driver or proxy) has taken it:

  start     publish phase DOUBLE_WRITE (reads old, writes both), then copy every moving
            table to the new layout and verify it (repairing, then once more to be clean)
  read-new  publish phase READ_NEW (reads new, writes both)
  finish    publish the target rules alone
  all       start, read-new and finish (the default)
  rollback  one switch back: READ_NEW → DOUBLE_WRITE → the rules before the migration
  status    the phase, the moving tables and which release each instance runs

Without a config center, --rules MIGRATING.yaml with --step copy or verify copies or
checks the rows for rules you switch yourself.`,
		Example: `  tangram shard migrate --app shop --namespace sharding.yaml --to rules-v2.yaml
  tangram shard migrate --app shop --namespace sharding.yaml --step rollback
  tangram shard migrate --rules migrating.yaml --step verify`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()
			out := cmd.ErrOrStderr()
			say := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
			if rulesPath != "" {
				b, err := os.ReadFile(rulesPath)
				if err != nil {
					return err
				}
				r, err := shard.ParseRules(b)
				if err != nil {
					return err
				}
				switch step {
				case "copy", "verify":
					return copyAndVerify(ctx, r, chunk, step == "copy", say)
				}
				return fmt.Errorf("--rules: --step copy or verify (the switches need the config center: --app and --namespace)")
			}
			if app == "" || ns == "" {
				return errors.New("give --app and --namespace (the config-center namespace holding the rules), or --rules for copy/verify alone")
			}
			m := &migration{admin: config.NewAdmin(g.server, g.token), co: config.Coord{Env: env, App: app, Cluster: cluster, NS: ns},
				wait: waitFor, settle: settle, chunk: chunk, say: say}
			var to []byte
			if toPath != "" {
				b, err := os.ReadFile(toPath)
				if err != nil {
					return err
				}
				if _, err := shard.ParseRules(b); err != nil {
					return fmt.Errorf("--to %s: %w", toPath, err)
				}
				to = b
			}
			switch step {
			case "start":
				return m.start(ctx, to)
			case "read-new":
				return m.readNew(ctx)
			case "finish":
				return m.finish(ctx)
			case "rollback":
				return m.rollback(ctx)
			case "status":
				return m.status(ctx, g)
			case "all":
				if err := m.start(ctx, to); err != nil {
					return err
				}
				if err := m.readNew(ctx); err != nil {
					return err
				}
				return m.finish(ctx)
			}
			return fmt.Errorf("--step %q: want start, read-new, finish, all, rollback or status", step)
		},
	}
	f := cmd.Flags()
	f.StringVar(&env, "env", "dev", "config environment")
	f.StringVar(&app, "app", "", "config app")
	f.StringVar(&cluster, "cluster", "default", "config cluster")
	f.StringVar(&ns, "namespace", "", "the yaml namespace holding the rules")
	f.StringVar(&toPath, "to", "", "the target rules (for start and all)")
	f.StringVar(&step, "step", "all", "start, read-new, finish, all, rollback or status (with --rules: copy or verify)")
	f.StringVar(&rulesPath, "rules", "", "a rules file holding a migration (copy or verify without the config center)")
	f.DurationVar(&waitFor, "wait", time.Minute, "how long every online instance has to take a switch")
	f.DurationVar(&settle, "settle", 11*time.Second, "after every instance took a switch, how long their statements begun before it may still run (instances drain up to 10 s)")
	f.IntVar(&chunk, "chunk", 500, "rows copied or compared under one lock")
	return cmd
}

type migration struct {
	admin  *config.Admin
	co     config.Coord
	wait   time.Duration
	settle time.Duration
	chunk  int
	say    func(string, ...any)
}

// current is the namespace's released rules document.
func (m *migration) current(ctx context.Context) ([]byte, *shard.Rules, error) {
	it, err := m.admin.Item(ctx, m.co, config.ContentKey, false)
	if err != nil {
		return nil, nil, fmt.Errorf("namespace %s: %w", m.co.NS, err)
	}
	r, err := shard.ParseRules([]byte(it.Value))
	if err != nil {
		return nil, nil, fmt.Errorf("namespace %s: %w", m.co.NS, err)
	}
	return []byte(it.Value), r, nil
}

// publish releases doc and waits until every online instance has it,
// then for their statements begun before it.
func (m *migration) publish(ctx context.Context, doc []byte, comment string) error {
	if _, err := m.admin.SetItem(ctx, m.co, config.ContentKey, config.ItemEdit{Value: string(doc)}); err != nil {
		return err
	}
	rel, err := m.admin.Publish(ctx, m.co, config.PublishRequest{Comment: comment})
	if err != nil {
		return err
	}
	m.say("published release %d: %s", rel.ID, comment)
	deadline := time.Now().Add(m.wait)
	last := ""
	for {
		insts, err := m.admin.Instances(ctx, m.co)
		if err != nil {
			return err
		}
		var behind []string
		online := 0
		for _, in := range insts {
			if !in.Online {
				continue
			}
			online++
			if in.ReleaseID < rel.ID {
				behind = append(behind, fmt.Sprintf("%s (%s) on release %d", in.Instance, in.IP, in.ReleaseID))
			}
		}
		if len(behind) == 0 {
			m.say("%d online instances took release %d; letting their earlier statements end (%v)", online, rel.ID, m.settle)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(m.settle):
			}
			return nil
		}
		if msg := fmt.Sprintf("%d of %d instances still on an earlier release", len(behind), online); msg != last {
			m.say("%s", msg)
			last = msg
		}
		if time.Now().After(deadline) {
			sort.Strings(behind)
			return fmt.Errorf("after %v, instances have not taken release %d: %s (roll back with --step rollback, or wait and run the step again)", m.wait, rel.ID, strings.Join(behind, "; "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (m *migration) start(ctx context.Context, to []byte) error {
	doc, r, err := m.current(ctx)
	if err != nil {
		return err
	}
	switch {
	case r.Migration() == nil:
		if to == nil {
			return errors.New("start: give the target rules with --to")
		}
		next, err := shard.MigrationDoc(doc, shard.PhaseDoubleWrite, to)
		if err != nil {
			return err
		}
		if err := m.publish(ctx, next, "migration: double writes, reads from the old layout"); err != nil {
			return err
		}
		if _, r, err = m.current(ctx); err != nil {
			return err
		}
	case r.Migration().Phase != shard.PhaseDoubleWrite:
		return fmt.Errorf("start: the migration is in phase %s already", r.Migration().Phase)
	default:
		m.say("phase %s already published: copying again", shard.PhaseDoubleWrite)
	}
	return copyAndVerify(ctx, r, m.chunk, true, m.say)
}

// copyAndVerify copies every moving table (when copy), verifies it with
// repairs, then once more without: the layouts must agree.
func copyAndVerify(ctx context.Context, r *shard.Rules, chunk int, copyRows bool, say func(string, ...any)) error {
	dbs, err := sqldriver.OpenDataSources(r, 8)
	if err != nil {
		return err
	}
	defer func() {
		for _, db := range dbs {
			db.Close()
		}
	}()
	mg, err := shard.NewMigrator(r, dbs)
	if err != nil {
		return err
	}
	mg.Chunk = chunk
	lastSaid := time.Time{}
	mg.Progress = func(p shard.Progress) {
		if time.Since(lastSaid) > time.Second {
			say("  %s %s: %d rows (at %s)", p.Step, p.Table, p.Rows, p.Node)
			lastSaid = time.Now()
		}
	}
	tables := mg.Tables()
	if len(tables) == 0 {
		return errors.New("no table changes its data nodes in this migration")
	}
	for _, t := range tables {
		if copyRows {
			n, err := mg.Copy(ctx, t)
			if err != nil {
				return err
			}
			say("copied %s: %d rows", t, n)
		}
		d, err := mg.Verify(ctx, t, copyRows)
		if err != nil {
			return err
		}
		say("verified %s: %d rows, %d missing, %d changed, %d extra, %d repaired", t, d.Rows, d.Missing, d.Changed, d.Extra, d.Repaired)
		if !copyRows {
			if !d.Clean() {
				return fmt.Errorf("%s differs between the layouts", t)
			}
			continue
		}
		again, err := mg.Verify(ctx, t, false)
		if err != nil {
			return err
		}
		if !again.Clean() {
			return fmt.Errorf("%s still differs after the repair (%d missing, %d changed, %d extra): writes reach one layout only — an instance not double-writing?", t, again.Missing, again.Changed, again.Extra)
		}
		say("verified %s again: the layouts agree (%d rows)", t, again.Rows)
	}
	return nil
}

func (m *migration) readNew(ctx context.Context) error {
	doc, r, err := m.current(ctx)
	if err != nil {
		return err
	}
	mig := r.Migration()
	if mig == nil || mig.Phase == shard.PhaseReadNew {
		return fmt.Errorf("read-new: want phase %s (now: %s)", shard.PhaseDoubleWrite, phaseOf(r))
	}
	to, err := shard.MigrationTarget(doc)
	if err != nil {
		return err
	}
	next, err := shard.MigrationDoc(doc, shard.PhaseReadNew, to)
	if err != nil {
		return err
	}
	return m.publish(ctx, next, "migration: reads from the new layout, writes to both")
}

func (m *migration) finish(ctx context.Context) error {
	doc, r, err := m.current(ctx)
	if err != nil {
		return err
	}
	if mig := r.Migration(); mig == nil || mig.Phase != shard.PhaseReadNew {
		return fmt.Errorf("finish: want phase %s (now: %s)", shard.PhaseReadNew, phaseOf(r))
	}
	to, err := shard.MigrationTarget(doc)
	if err != nil {
		return err
	}
	return m.publish(ctx, to, "migration: finished, the new layout alone")
}

func (m *migration) rollback(ctx context.Context) error {
	doc, r, err := m.current(ctx)
	if err != nil {
		return err
	}
	mig := r.Migration()
	if mig == nil {
		return errors.New("rollback: no migration in progress (after finish the old layout is no longer written: migrate back instead)")
	}
	to, err := shard.MigrationTarget(doc)
	if err != nil {
		return err
	}
	if mig.Phase == shard.PhaseReadNew {
		next, err := shard.MigrationDoc(doc, shard.PhaseDoubleWrite, to)
		if err != nil {
			return err
		}
		return m.publish(ctx, next, "migration rolled back: reads from the old layout again")
	}
	next, err := shard.MigrationDoc(doc, "", nil)
	if err != nil {
		return err
	}
	return m.publish(ctx, next, "migration rolled back: the old layout alone")
}

func (m *migration) status(ctx context.Context, g *globals) error {
	_, r, err := m.current(ctx)
	if err != nil {
		return err
	}
	insts, err := m.admin.Instances(ctx, m.co)
	if err != nil {
		return err
	}
	var moving []string
	if mig := r.Migration(); mig != nil {
		for _, t := range mig.To.Tables() {
			if mig.Moving(r, t) {
				moving = append(moving, t)
			}
		}
	}
	type status struct {
		Phase     string            `json:"phase"`
		Moving    []string          `json:"moving"`
		Instances []config.Instance `json:"instances"`
	}
	st := status{Phase: phaseOf(r), Moving: moving, Instances: insts}
	return g.Print(st, func(w *tabwriter.Writer) {
		row(w, "PHASE", st.Phase)
		row(w, "MOVING", strings.Join(moving, " "))
		for _, in := range insts {
			row(w, "INSTANCE", fmt.Sprintf("%s %s release %d online=%v", in.Instance, in.IP, in.ReleaseID, in.Online))
		}
	})
}

func phaseOf(r *shard.Rules) string {
	if m := r.Migration(); m != nil {
		return m.Phase
	}
	return "none"
}
