package console

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/tangram-dev/tangram/config"
	configserver "github.com/tangram-dev/tangram/config/server"
	"github.com/tangram-dev/tangram/internal/auth"
)

func (c *Console) registerConfig(mux *http.ServeMux) {
	if c.cfg.Config == nil {
		return
	}
	const nsPath = "/config/{env}/{app}/{cluster}/{ns}"
	mux.Handle("GET /config", c.page(c.appsPage))
	mux.Handle("POST /config/apps", c.page(c.createApp))
	mux.Handle("GET /config/{env}/{app}", c.page(c.appPage))
	mux.Handle("POST /config/{env}/{app}/{cluster}/-/namespaces", c.page(c.createNamespace))
	mux.Handle("POST /config/{env}/{app}/-/clusters", c.page(c.createCluster))
	mux.Handle("GET "+nsPath, c.page(c.namespacePage))
	mux.Handle("GET "+nsPath+"/diff", c.page(c.diffPage))
	mux.Handle("POST "+nsPath+"/{action}", c.page(c.namespaceAction))
	mux.Handle("POST "+nsPath+"/gray/{action}", c.page(c.grayAction))
	mux.Handle("POST "+nsPath+"/requests/{id}", c.page(c.requestAction))
}

func coordOf(r *http.Request) config.Coord {
	return config.Coord{Env: r.PathValue("env"), App: r.PathValue("app"), Cluster: r.PathValue("cluster"), NS: r.PathValue("ns")}
}

func (c *Console) appsPage(w http.ResponseWriter, r *http.Request) error {
	envs, err := c.cfg.Config.ListEnvs(r.Context())
	if err != nil {
		return err
	}
	apps, err := c.cfg.Config.ListApps(r.Context())
	if err != nil {
		return err
	}
	var cs chartSet
	cs.add(c.metricChart("Watchers", "",
		metricLine{class: "line-calls", name: "held", metric: "tangram_config_watchers"}))
	cs.add(c.metricChart("Releases and fetches per minute", "",
		metricLine{class: "line-errors", name: "releases", metric: "tangram_config_releases_total"},
		metricLine{class: "line-calls", name: "fetches", metric: "tangram_config_fetches_total"}))
	c.render(w, r, "apps", "Configuration", map[string]any{"Envs": envs, "Apps": configserver.VisibleApps(r.Context(), apps), "Charts": cs})
	return nil
}

func (c *Console) createApp(w http.ResponseWriter, r *http.Request) error {
	name := strings.TrimSpace(r.PostFormValue("name"))
	if err := configserver.Authorize(r.Context(), configserver.OpCreateApp, config.Coord{App: name}); err != nil {
		return err
	}
	if _, err := c.cfg.Config.CreateApp(r.Context(), auth.Actor(r.Context()), config.App{Name: name, Description: r.PostFormValue("description")}); err != nil {
		return err
	}
	c.back(w, r, "app "+name+" created", "")
	return nil
}

func (c *Console) appPage(w http.ResponseWriter, r *http.Request) error {
	env, app := r.PathValue("env"), r.PathValue("app")
	if err := configserver.Authorize(r.Context(), configserver.OpRead, config.Coord{Env: env, App: app}); err != nil {
		return err
	}
	cluster := r.URL.Query().Get("cluster")
	if cluster == "" {
		cluster = config.DefaultCluster
	}
	clusters, err := c.cfg.Config.ListClusters(r.Context(), env, app)
	if err != nil {
		return err
	}
	nss, err := c.cfg.Config.ListNamespaces(r.Context(), env, app, cluster)
	if err != nil {
		return err
	}
	envs, err := c.cfg.Config.ListEnvs(r.Context())
	if err != nil {
		return err
	}
	c.render(w, r, "app", app, map[string]any{"Env": env, "App": app, "Cluster": cluster, "Clusters": clusters, "Namespaces": nss, "Envs": envs})
	return nil
}

func (c *Console) createNamespace(w http.ResponseWriter, r *http.Request) error {
	co := coordOf(r)
	co.NS = r.PostFormValue("name")
	if err := configserver.Authorize(r.Context(), configserver.OpCreateNS, co); err != nil {
		return err
	}
	spec := config.NamespaceSpec{Name: co.NS, Format: r.PostFormValue("format"), Public: r.PostFormValue("public") == "1", LinkApp: strings.TrimSpace(r.PostFormValue("link_app"))}
	if spec.LinkApp != "" {
		spec.Format = ""
	}
	if _, err := c.cfg.Config.CreateNamespace(r.Context(), auth.Actor(r.Context()), co.Env, co.App, co.Cluster, spec); err != nil {
		return err
	}
	c.back(w, r, "namespace "+co.NS+" created", "")
	return nil
}

func (c *Console) createCluster(w http.ResponseWriter, r *http.Request) error {
	env, app := r.PathValue("env"), r.PathValue("app")
	if err := configserver.Authorize(r.Context(), configserver.OpCreateCluster, config.Coord{Env: env, App: app}); err != nil {
		return err
	}
	name := r.PostFormValue("name")
	if err := c.cfg.Config.CreateCluster(r.Context(), auth.Actor(r.Context()), env, app, name); err != nil {
		return err
	}
	c.back(w, r, "cluster "+name+" created", "")
	return nil
}

func (c *Console) namespacePage(w http.ResponseWriter, r *http.Request) error {
	co := coordOf(r)
	if err := configserver.Authorize(r.Context(), configserver.OpRead, co); err != nil {
		return err
	}
	ctx := r.Context()
	cs := c.cfg.Config
	ns, err := cs.Namespace(ctx, co)
	if err != nil {
		return err
	}
	items, err := cs.Items(ctx, co, false)
	if err != nil {
		return err
	}
	pending, err := cs.DiffReleases(ctx, co, 0, 0)
	if err != nil {
		return err
	}
	releases, err := cs.Releases(ctx, co, 0, 30)
	if err != nil {
		return err
	}
	requests, err := cs.Requests(ctx, co, "")
	if err != nil {
		return err
	}
	instances, err := cs.Instances(ctx, co)
	if err != nil {
		return err
	}
	gray, _ := cs.GetGray(ctx, co)
	content := ""
	var plain []config.KV // the text mode's items: every one but the secrets
	for _, it := range items {
		if it.Key == config.ContentKey {
			content = it.Value
		}
		if !it.Secret {
			plain = append(plain, config.KV{Key: it.Key, Value: it.Value})
		}
	}
	// Search: the draft's items whose key or value holds q.
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	shown := items
	if q != "" {
		shown = nil
		lq := strings.ToLower(q)
		for _, it := range items {
			if strings.Contains(strings.ToLower(it.Key), lq) || (!it.Secret && strings.Contains(strings.ToLower(it.Value), lq)) {
				shown = append(shown, it)
			}
		}
	}
	c.render(w, r, "namespace", co.NS, map[string]any{"NS": ns, "Items": shown, "Total": len(items), "Q": q, "Pending": pending, "Releases": releases,
		"Requests": requests, "Instances": instances, "Gray": gray, "Content": content, "Text": config.FormatProperties(plain)})
	return nil
}

func formVersion(r *http.Request) *int64 {
	v, err := strconv.ParseInt(r.PostFormValue("version"), 10, 64)
	if err != nil {
		return nil
	}
	return &v
}

func (c *Console) namespaceAction(w http.ResponseWriter, r *http.Request) error {
	co := coordOf(r)
	ctx := r.Context()
	actor := auth.Actor(ctx)
	cs := c.cfg.Config
	ops := map[string]configserver.Op{"set": configserver.OpEditDraft, "delete": configserver.OpEditDraft, "text": configserver.OpEditDraft, "publish": configserver.OpPublish, "rollback": configserver.OpRollback, "settings": configserver.OpSettings}
	op, ok := ops[r.PathValue("action")]
	if !ok {
		http.NotFound(w, r)
		return nil
	}
	if r.PathValue("action") == "publish" && r.PostFormValue("mode") == "request" {
		op = configserver.OpRequest
	}
	if err := configserver.Authorize(ctx, op, co); err != nil {
		return err
	}
	switch r.PathValue("action") {
	case "set":
		it := config.Item{Key: strings.TrimSpace(r.PostFormValue("key")), Value: r.PostFormValue("value"), Secret: r.PostFormValue("secret") == "1", Comment: r.PostFormValue("comment")}
		if _, err := cs.EditDraft(ctx, actor, co, config.Edit{Set: []config.Item{it}, Version: formVersion(r)}); err != nil {
			return err
		}
		c.back(w, r, "saved "+it.Key+" to the draft", "")
	case "text":
		// Text mode (Apollo's): the draft's non-secret items as one
		// properties document; what changed is saved, what is gone is
		// deleted, secrets are left as they are.
		kvs, err := config.ParseProperties(r.PostFormValue("text"))
		if err != nil {
			c.back(w, r, "", "text: "+err.Error())
			return nil
		}
		items, err := cs.Items(ctx, co, false)
		if err != nil {
			return err
		}
		have := map[string]config.Item{}
		for _, it := range items {
			have[it.Key] = it
		}
		e := config.Edit{Version: formVersion(r)}
		seen := map[string]bool{}
		for _, kv := range kvs {
			seen[kv.Key] = true
			old, ok := have[kv.Key]
			if ok && old.Secret {
				c.back(w, r, "", "text: "+kv.Key+" is a secret; change it with the key form")
				return nil
			}
			if !ok || old.Value != kv.Value {
				e.Set = append(e.Set, config.Item{Key: kv.Key, Value: kv.Value, Comment: old.Comment})
			}
		}
		for _, it := range items {
			if !it.Secret && !seen[it.Key] {
				e.Delete = append(e.Delete, it.Key)
			}
		}
		if len(e.Set) == 0 && len(e.Delete) == 0 {
			c.back(w, r, "no change", "")
			return nil
		}
		if _, err := cs.EditDraft(ctx, actor, co, e); err != nil {
			return err
		}
		c.back(w, r, fmt.Sprintf("saved the text: %d set, %d deleted", len(e.Set), len(e.Delete)), "")
	case "delete":
		if _, err := cs.EditDraft(ctx, actor, co, config.Edit{Delete: []string{r.PostFormValue("key")}, Version: formVersion(r)}); err != nil {
			return err
		}
		c.back(w, r, "deleted "+r.PostFormValue("key")+" from the draft", "")
	case "publish":
		if r.PostFormValue("mode") == "request" {
			req, err := cs.RequestRelease(ctx, actor, co, r.PostFormValue("comment"))
			if err != nil {
				return err
			}
			c.back(w, r, "release request #"+strconv.FormatInt(req.ID, 10)+" filed", "")
			return nil
		}
		rel, err := cs.Publish(ctx, actor, co, config.PublishRequest{Comment: r.PostFormValue("comment"), Emergency: r.PostFormValue("emergency") == "1", Version: formVersion(r)})
		if err != nil {
			return err
		}
		c.back(w, r, "published version "+strconv.FormatInt(rel.Version, 10), "")
	case "rollback":
		to, _ := strconv.ParseInt(r.PostFormValue("to"), 10, 64)
		rel, err := cs.Rollback(ctx, actor, co, config.RollbackRequest{To: to})
		if err != nil {
			return err
		}
		c.back(w, r, "rolled back: "+rel.Comment, "")
	case "settings":
		ra, sp := r.PostFormValue("require_approval") == "1", r.PostFormValue("separate_publisher") == "1"
		if _, err := cs.UpdateSettings(ctx, actor, co, config.Settings{RequireApproval: &ra, SeparatePublisher: &sp}); err != nil {
			return err
		}
		c.back(w, r, "settings saved", "")
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func (c *Console) grayAction(w http.ResponseWriter, r *http.Request) error {
	co := coordOf(r)
	ctx := r.Context()
	actor := auth.Actor(ctx)
	cs := c.cfg.Config
	switch r.PathValue("action") {
	case "set":
		if err := configserver.Authorize(ctx, configserver.OpEditGray, co); err != nil {
			return err
		}
		e := config.GrayEdit{}
		pct, _ := strconv.Atoi(strings.TrimSpace(r.PostFormValue("percent")))
		e.Rules = &config.Rules{IPs: splitList(r.PostFormValue("ips")), Labels: splitList(r.PostFormValue("labels")), Percent: pct}
		if key := strings.TrimSpace(r.PostFormValue("key")); key != "" {
			if r.PostFormValue("delete") == "1" {
				e.Delete = []string{key}
			} else {
				e.Set = []config.Item{{Key: key, Value: r.PostFormValue("value")}}
			}
		}
		if _, err := cs.EditGray(ctx, actor, co, e); err != nil {
			return err
		}
		c.back(w, r, "gray branch saved", "")
	case "action":
		if err := configserver.Authorize(ctx, configserver.OpReleaseGray, co); err != nil {
			return err
		}
		var err error
		switch r.PostFormValue("action") {
		case "publish":
			_, err = cs.PublishGray(ctx, actor, co, "")
		case "promote":
			_, err = cs.PromoteGray(ctx, actor, co, config.PublishRequest{})
		case "abandon":
			err = cs.AbandonGray(ctx, actor, co)
		}
		if err != nil {
			return err
		}
		c.back(w, r, "gray "+r.PostFormValue("action")+" done", "")
	default:
		http.NotFound(w, r)
	}
	return nil
}

func (c *Console) requestAction(w http.ResponseWriter, r *http.Request) error {
	co := coordOf(r)
	ctx := r.Context()
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		http.NotFound(w, r)
		return nil
	}
	cs := c.cfg.Config
	actor := auth.Actor(ctx)
	switch d := r.PostFormValue("decision"); d {
	case "approve", "reject":
		if err := configserver.Authorize(ctx, configserver.OpReview, co); err != nil {
			return err
		}
		if d == "approve" {
			_, err = cs.Approve(ctx, actor, co, id, config.Decision{})
		} else {
			err = cs.Decline(ctx, actor, co, id, config.StatusRejected, config.Decision{})
		}
	case "cancel":
		if err := configserver.Authorize(ctx, configserver.OpCancelRequest, co); err != nil {
			return err
		}
		err = cs.Decline(ctx, actor, co, id, config.StatusCancelled, config.Decision{})
	default:
		http.NotFound(w, r)
		return nil
	}
	if err != nil {
		return err
	}
	c.back(w, r, "request "+r.PathValue("id")+" "+r.PostFormValue("decision")+"d", "")
	return nil
}

func (c *Console) diffPage(w http.ResponseWriter, r *http.Request) error {
	co := coordOf(r)
	if err := configserver.Authorize(r.Context(), configserver.OpRead, co); err != nil {
		return err
	}
	ns, err := c.cfg.Config.Namespace(r.Context(), co)
	if err != nil {
		return err
	}
	from, to := r.URL.Query().Get("from"), r.URL.Query().Get("to")
	if from == "" {
		from = "current"
	}
	if to == "" {
		to = "draft"
	}
	id := func(v string) int64 {
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	changes, err := c.cfg.Config.DiffReleases(r.Context(), co, id(from), id(to))
	if err != nil {
		return err
	}
	releases, err := c.cfg.Config.Releases(r.Context(), co, 0, 100)
	if err != nil {
		return err
	}
	c.render(w, r, "diff", "Diff "+co.NS, map[string]any{"NS": ns, "From": from, "To": to, "Changes": changes, "Releases": releases})
	return nil
}
