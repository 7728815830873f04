package console

import (
	"net/http"
	"sort"
	"strings"

	"github.com/tangram-dev/tangram/config"
	configserver "github.com/tangram-dev/tangram/config/server"
	"github.com/tangram-dev/tangram/shard"
)

// The sharding pages read the rules the drivers and proxies follow: the
// yaml namespaces of the config center whose release is a rules file.
// Edits, history, rollback and gray releases are the namespace's own
// page; migrations are driven by tangram shard migrate and shown here.

func (c *Console) registerShard(mux *http.ServeMux) {
	if c.cfg.Config == nil {
		return
	}
	mux.Handle("GET /shard", c.page(c.shardPage))
	mux.Handle("GET /shard/{env}/{app}/{cluster}/{ns}", c.page(c.shardRulesPage))
}

// shardRow is one namespace holding sharding rules.
type shardRow struct {
	config.Coord
	Tables, DataSources, Replicas int
	Phase                         string // a migration's, or ""
	Instances, Behind             int    // online instances; those on an earlier release
	Err                           string // the release does not parse
}

// rulesOf reads the released rules of a yaml namespace (nil, "" when the
// document is not sharding rules at all).
func (c *Console) rulesOf(r *http.Request, co config.Coord) (*shard.Rules, string, error) {
	p, err := c.cfg.Config.Fetch(r.Context(), co, config.Peer{}, false)
	if err != nil {
		return nil, "", err
	}
	doc := p.Items[config.ContentKey]
	if !strings.Contains(doc, "dataSources:") {
		return nil, "", nil
	}
	rules, err := shard.ParseRules([]byte(doc))
	if err != nil {
		return nil, doc, err
	}
	return rules, doc, nil
}

// instancesOn counts a namespace's online instances and those on an
// earlier release than its current one.
func (c *Console) instancesOn(r *http.Request, co config.Coord, release int64) (online, behind int, list []config.Instance, err error) {
	insts, err := c.cfg.Config.Instances(r.Context(), co)
	if err != nil {
		return 0, 0, nil, err
	}
	for _, in := range insts {
		if !in.Online {
			continue
		}
		online++
		if in.ReleaseID < release {
			behind++
		}
	}
	return online, behind, insts, nil
}

// shardPage lists the rules namespaces the user may read.
func (c *Console) shardPage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	cs := c.cfg.Config
	envs, err := cs.ListEnvs(ctx)
	if err != nil {
		return err
	}
	apps, err := cs.ListApps(ctx)
	if err != nil {
		return err
	}
	var rows []shardRow
	for _, e := range envs {
		for _, a := range apps {
			if configserver.Authorize(ctx, configserver.OpRead, config.Coord{Env: e.Name, App: a.Name}) != nil {
				continue
			}
			clusters, err := cs.ListClusters(ctx, e.Name, a.Name)
			if err != nil {
				continue // the app does not exist in this environment
			}
			for _, cl := range clusters {
				nss, err := cs.ListNamespaces(ctx, e.Name, a.Name, cl)
				if err != nil {
					return err
				}
				for _, ns := range nss {
					if ns.Format != config.YAML || ns.ReleaseID == 0 {
						continue
					}
					rules, _, err := c.rulesOf(r, ns.Coord)
					row := shardRow{Coord: ns.Coord}
					switch {
					case err != nil:
						row.Err = err.Error()
					case rules == nil:
						continue
					default:
						row.Tables = len(rules.Tables())
						row.DataSources = len(rules.DataSources)
						row.Replicas = len(rules.ReadDataSources)
						if m := rules.Migration(); m != nil {
							row.Phase = m.Phase
						}
					}
					row.Instances, row.Behind, _, _ = c.instancesOn(r, ns.Coord, ns.ReleaseID)
					rows = append(rows, row)
				}
			}
		}
	}
	c.render(w, r, "shard", "Sharding", map[string]any{"Rows": rows})
	return nil
}

// shardTable is one logical table as the page shows it.
type shardTable struct {
	Name, Nodes, Moving string // Moving: the target's nodes during a migration
	Count               int
}

func (c *Console) shardRulesPage(w http.ResponseWriter, r *http.Request) error {
	co := config.Coord{Env: r.PathValue("env"), App: r.PathValue("app"), Cluster: r.PathValue("cluster"), NS: r.PathValue("ns")}
	if err := configserver.Authorize(r.Context(), configserver.OpRead, co); err != nil {
		return err
	}
	ns, err := c.cfg.Config.Namespace(r.Context(), co)
	if err != nil {
		return err
	}
	rules, doc, err := c.rulesOf(r, co)
	parseErr := ""
	if err != nil {
		parseErr = err.Error()
	}
	nodes := func(ns []shard.Node) string {
		s := make([]string, len(ns))
		for i, n := range ns {
			s[i] = n.String()
		}
		return strings.Join(s, " ")
	}
	var tables []shardTable
	var broadcast []string
	var groups []*shard.ReadGroup
	var dataSources []string
	phase := ""
	if rules != nil {
		m := rules.Migration()
		for _, name := range rules.Tables() {
			t := rules.Table(name)
			row := shardTable{Name: name, Nodes: nodes(t.Nodes), Count: len(t.Nodes)}
			if m != nil && m.Moving(rules, name) {
				row.Moving = nodes(m.To.Table(name).Nodes)
			}
			tables = append(tables, row)
		}
		broadcast = rules.BroadcastTables()
		for _, ds := range rules.DataSourceNames() {
			dataSources = append(dataSources, ds+" → "+redact(rules.DataSources[ds]))
			if g := rules.ReadGroup(ds); g != nil {
				groups = append(groups, g)
			}
		}
		if m != nil {
			phase = m.Phase
		}
	}
	online, behind, insts, err := c.instancesOn(r, co, ns.ReleaseID)
	if err != nil {
		return err
	}
	sort.Slice(insts, func(i, j int) bool { return insts[i].Instance < insts[j].Instance })
	c.render(w, r, "shardrules", co.NS, map[string]any{"Coord": co, "NS": ns, "Tables": tables, "Broadcast": broadcast,
		"Groups": groups, "DataSources": dataSources, "Phase": phase, "Err": parseErr, "Doc": doc,
		"Instances": insts, "Online": online, "Behind": behind})
	return nil
}

// redact hides a data source URL's password.
func redact(u string) string {
	at := strings.LastIndexByte(u, '@')
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 {
		return u
	}
	cred := u[scheme+3 : at]
	if user, _, ok := strings.Cut(cred, ":"); ok {
		return u[:scheme+3] + user + ":******" + u[at:]
	}
	return u
}
