package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/tangram-dev/tangram/config"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
)

// Mount mounts the config API on mux under /api/v1/config. wrap
// authenticates (auth.Service.Require); every handler checks permissions.
func (s *Server) Mount(mux api.Mux, wrap func(http.Handler) http.Handler) {
	h := func(pattern string, fn api.HandlerFunc) {
		mux.Handle(pattern, wrap(api.Handler(s.log, fn)))
	}
	const base = "/api/v1/config"
	const nsPath = base + "/envs/{env}/apps/{app}/clusters/{cluster}/namespaces/{ns}"
	coord := coordOf
	actor := func(r *http.Request) string { return auth.Actor(r.Context()) }

	h("GET "+base+"/envs", func(w http.ResponseWriter, r *http.Request) error {
		if err := Authorize(r.Context(), OpRead, config.Coord{}); err != nil {
			return err
		}
		envs, err := s.ListEnvs(r.Context())
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[config.Env]{Items: envs})
		return nil
	})
	h("POST "+base+"/envs", func(w http.ResponseWriter, r *http.Request) error {
		if err := Authorize(r.Context(), OpManageEnvs, config.Coord{}); err != nil {
			return err
		}
		var e config.Env
		if err := api.Decode(r, &e); err != nil {
			return err
		}
		out, err := s.CreateEnv(r.Context(), actor(r), e)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 201, out)
		return nil
	})
	h("PUT "+base+"/envs/{env}", func(w http.ResponseWriter, r *http.Request) error {
		if err := Authorize(r.Context(), OpManageEnvs, config.Coord{Env: r.PathValue("env")}); err != nil {
			return err
		}
		var e config.Env
		if err := api.Decode(r, &e); err != nil {
			return err
		}
		e.Name = r.PathValue("env")
		out, err := s.UpdateEnv(r.Context(), actor(r), e)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, out)
		return nil
	})
	h("GET "+base+"/apps", func(w http.ResponseWriter, r *http.Request) error {
		if err := Authorize(r.Context(), OpRead, config.Coord{}); err != nil {
			return err
		}
		apps, err := s.ListApps(r.Context())
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[config.App]{Items: VisibleApps(r.Context(), apps)})
		return nil
	})
	h("POST "+base+"/apps", func(w http.ResponseWriter, r *http.Request) error {
		var a config.App
		if err := api.Decode(r, &a); err != nil {
			return err
		}
		if err := Authorize(r.Context(), OpCreateApp, config.Coord{App: a.Name}); err != nil {
			return err
		}
		out, err := s.CreateApp(r.Context(), actor(r), a)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 201, out)
		return nil
	})
	h("GET "+base+"/apps/{app}", func(w http.ResponseWriter, r *http.Request) error {
		if err := Authorize(r.Context(), OpRead, config.Coord{App: r.PathValue("app")}); err != nil {
			return err
		}
		a, err := s.GetApp(r.Context(), r.PathValue("app"))
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, a)
		return nil
	})
	h("GET "+base+"/envs/{env}/apps/{app}/clusters", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpRead, c); err != nil {
			return err
		}
		cl, err := s.ListClusters(r.Context(), c.Env, c.App)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[string]{Items: cl})
		return nil
	})
	h("POST "+base+"/envs/{env}/apps/{app}/clusters", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpCreateCluster, c); err != nil {
			return err
		}
		var req struct {
			Name string `json:"name"`
		}
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		if err := s.CreateCluster(r.Context(), actor(r), c.Env, c.App, req.Name); err != nil {
			return err
		}
		api.WriteJSON(w, 201, map[string]string{"name": req.Name})
		return nil
	})
	h("GET "+base+"/envs/{env}/apps/{app}/clusters/{cluster}/namespaces", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpRead, c); err != nil {
			return err
		}
		nss, err := s.ListNamespaces(r.Context(), c.Env, c.App, c.Cluster)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[config.Namespace]{Items: nss})
		return nil
	})
	h("POST "+base+"/envs/{env}/apps/{app}/clusters/{cluster}/namespaces", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		var spec config.NamespaceSpec
		if err := api.Decode(r, &spec); err != nil {
			return err
		}
		c.NS = spec.Name
		if err := Authorize(r.Context(), OpCreateNS, c); err != nil {
			return err
		}
		ns, err := s.CreateNamespace(r.Context(), actor(r), c.Env, c.App, c.Cluster, spec)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 201, ns)
		return nil
	})

	// One namespace.
	h("GET "+nsPath, func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpRead, c); err != nil {
			return err
		}
		ns, err := s.Namespace(r.Context(), c)
		if err != nil {
			return err
		}
		items, err := s.Items(r.Context(), c, false)
		if err != nil {
			return err
		}
		pending, err := s.DiffReleases(r.Context(), c, 0, 0)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, config.NamespaceView{Namespace: *ns, Items: items, Pending: pending})
		return nil
	})
	h("PATCH "+nsPath, nsCall(OpSettings, 200, func(ctx context.Context, actor string, c config.Coord, set config.Settings) (any, error) {
		return s.UpdateSettings(ctx, actor, c, set)
	}))
	h("GET "+nsPath+"/items/{key}", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpRead, c); err != nil {
			return err
		}
		key := r.PathValue("key")
		// One shape with PUT's {"value"}: the API's Item, not the
		// snapshot's compact {"k","v"}.
		var it config.Item
		var found bool
		if r.URL.Query().Get("source") == "draft" {
			items, err := s.Items(r.Context(), c, false)
			if err != nil {
				return err
			}
			for _, x := range items {
				if x.Key == key {
					it, found = x, true
				}
			}
		} else {
			ns, err := s.Namespace(r.Context(), c)
			if err != nil {
				return err
			}
			snap, err := s.currentSnapshot(r.Context(), s.st, ns)
			if err != nil {
				return err
			}
			si, ok := snap.Get(key)
			it, found = config.Item{Key: si.Key, Value: si.Value, Secret: si.Secret}, ok
			if found && it.Secret {
				it.Value = config.Masked
			}
		}
		if !found {
			if r.URL.Query().Get("source") != "draft" {
				if ns, err := s.Namespace(r.Context(), c); err == nil && ns.ReleaseID == 0 {
					return api.NotFound("%s has no release yet: publish it, or read the draft (?source=draft, CLI --draft)", c)
				}
			}
			return api.NotFound("key %q not found in %s", key, c)
		}
		api.WriteJSON(w, 200, it)
		return nil
	})
	h("PUT "+nsPath+"/items/{key}", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpEditDraft, c); err != nil {
			return err
		}
		var req config.ItemEdit
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		v, err := s.EditDraft(r.Context(), actor(r), c, config.Edit{Set: []config.Item{{Key: r.PathValue("key"), Value: req.Value, Secret: req.Secret, Comment: req.Comment}}, Version: req.Version})
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, config.DraftVersion{DraftVersion: v})
		return nil
	})
	h("DELETE "+nsPath+"/items/{key}", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpEditDraft, c); err != nil {
			return err
		}
		e := config.Edit{Delete: []string{r.PathValue("key")}}
		if v := r.URL.Query().Get("version"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return api.BadRequest("version %q is not a number", v)
			}
			e.Version = &n
		}
		v, err := s.EditDraft(r.Context(), actor(r), c, e)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, config.DraftVersion{DraftVersion: v})
		return nil
	})
	h("POST "+nsPath+"/draft", nsCall(OpEditDraft, 200, func(ctx context.Context, actor string, c config.Coord, e config.Edit) (any, error) {
		v, err := s.EditDraft(ctx, actor, c, e)
		return config.DraftVersion{DraftVersion: v}, err
	}))
	h("POST "+nsPath+"/publish", nsCall(OpPublish, 201, func(ctx context.Context, actor string, c config.Coord, req config.PublishRequest) (any, error) {
		return s.Publish(ctx, actor, c, req)
	}))
	h("GET "+nsPath+"/releases", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpRead, c); err != nil {
			return err
		}
		page, err := api.ReadPage(r, 20, 500)
		if err != nil {
			return err
		}
		rels, err := s.Releases(r.Context(), c, page.Cursor, page.Limit)
		if err != nil {
			return err
		}
		out := api.List[config.Release]{Items: rels}
		if len(rels) == page.Limit {
			out.NextCursor = strconv.FormatInt(rels[len(rels)-1].ID, 10)
		}
		api.WriteJSON(w, 200, out)
		return nil
	})
	h("GET "+nsPath+"/releases/{id}", nsRead(func(r *http.Request, c config.Coord) (any, error) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return nil, api.BadRequest("release id %q is not a number", r.PathValue("id"))
		}
		return s.Release(r.Context(), c, id)
	}))
	h("GET "+nsPath+"/diff", nsRead(func(r *http.Request, c config.Coord) (any, error) {
		from, err1 := optInt(r, "from")
		to, err2 := optInt(r, "to")
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		changes, err := s.DiffReleases(r.Context(), c, from, to)
		return api.List[config.Change]{Items: changes}, err
	}))
	h("POST "+nsPath+"/rollback", nsCall(OpRollback, 201, func(ctx context.Context, actor string, c config.Coord, req config.RollbackRequest) (any, error) {
		return s.Rollback(ctx, actor, c, req)
	}))
	h("GET "+nsPath+"/gray", nsRead(func(r *http.Request, c config.Coord) (any, error) {
		return s.GetGray(r.Context(), c)
	}))
	h("POST "+nsPath+"/gray", nsCall(OpEditGray, 200, func(ctx context.Context, actor string, c config.Coord, e config.GrayEdit) (any, error) {
		return s.EditGray(ctx, actor, c, e)
	}))
	h("POST "+nsPath+"/gray/publish", nsCall(OpReleaseGray, 201, func(ctx context.Context, actor string, c config.Coord, req config.PublishRequest) (any, error) {
		return s.PublishGray(ctx, actor, c, req.Comment)
	}))
	h("POST "+nsPath+"/gray/promote", nsCall(OpReleaseGray, 201, func(ctx context.Context, actor string, c config.Coord, req config.PublishRequest) (any, error) {
		return s.PromoteGray(ctx, actor, c, req)
	}))
	h("POST "+nsPath+"/gray/abandon", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpReleaseGray, c); err != nil {
			return err
		}
		if err := s.AbandonGray(r.Context(), actor(r), c); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	h("GET "+nsPath+"/requests", nsRead(func(r *http.Request, c config.Coord) (any, error) {
		reqs, err := s.Requests(r.Context(), c, r.URL.Query().Get("status"))
		return api.List[config.ReleaseRequest]{Items: reqs}, err
	}))
	h("POST "+nsPath+"/requests", nsCall(OpRequest, 201, func(ctx context.Context, actor string, c config.Coord, req struct {
		Comment string `json:"comment"`
	}) (any, error) {
		return s.RequestRelease(ctx, actor, c, req.Comment)
	}))
	h("POST "+nsPath+"/requests/{id}/{decision}", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			return api.BadRequest("request id %q is not a number", r.PathValue("id"))
		}
		var d config.Decision
		if err := api.Decode(r, &d); err != nil {
			return err
		}
		switch r.PathValue("decision") {
		case "approve":
			if err := Authorize(r.Context(), OpReview, c); err != nil {
				return err
			}
			rel, err := s.Approve(r.Context(), actor(r), c, id, d)
			if err != nil {
				return err
			}
			api.WriteJSON(w, 201, rel)
			return nil
		case "reject":
			if err := Authorize(r.Context(), OpReview, c); err != nil {
				return err
			}
			err = s.Decline(r.Context(), actor(r), c, id, config.StatusRejected, d)
		case "cancel":
			if err := Authorize(r.Context(), OpCancelRequest, c); err != nil {
				return err
			}
			err = s.Decline(r.Context(), actor(r), c, id, config.StatusCancelled, d)
		default:
			return api.NotFound("decision %q (want approve, reject or cancel)", r.PathValue("decision"))
		}
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	h("GET "+nsPath+"/instances", nsRead(func(r *http.Request, c config.Coord) (any, error) {
		ins, err := s.Instances(r.Context(), c)
		return api.List[config.Instance]{Items: ins}, err
	}))
	h("GET "+nsPath+"/export", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpRead, c); err != nil {
			return err
		}
		var f config.Format
		if v := r.URL.Query().Get("format"); v != "" {
			var err error
			if f, err = config.ParseFormat(v); err != nil {
				return err
			}
		}
		reveal := r.URL.Query().Get("reveal") == "true"
		if reveal {
			if err := Authorize(r.Context(), OpReveal, c); err != nil {
				return err
			}
		}
		out, err := s.Export(r.Context(), c, r.URL.Query().Get("source") == "draft", reveal, f)
		if err != nil {
			return err
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, out)
		return nil
	})
	h("POST "+nsPath+"/import", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpEditDraft, c); err != nil {
			return err
		}
		var req config.ImportRequest
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		var f config.Format
		if req.Format != "" {
			var err error
			if f, err = config.ParseFormat(req.Format); err != nil {
				return err
			}
		}
		v, n, err := s.Import(r.Context(), actor(r), c, f, req.Data, req.Merge)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, config.DraftVersion{DraftVersion: v, Items: int64(n)})
		return nil
	})

	// The client (SDK) endpoints.
	h("GET "+base+"/configs/{env}/{app}/{cluster}/{ns}", func(w http.ResponseWriter, r *http.Request) error {
		c := coord(r)
		if err := Authorize(r.Context(), OpRead, c); err != nil {
			return err
		}
		q := r.URL.Query()
		cl := config.Peer{Instance: q.Get("instance"), IP: q.Get("ip")}
		if len(cl.Instance) > 128 || len(cl.IP) > 64 || len(q.Get("labels")) > 1024 {
			return api.BadRequest("instance (128), ip (64) or labels (1024) longer than its limit")
		}
		if cl.IP == "" {
			cl.IP, _, _ = net.SplitHostPort(r.RemoteAddr)
		}
		if l := q.Get("labels"); l != "" {
			cl.Labels = strings.Split(l, ",")
		}
		cfg, err := s.Fetch(r.Context(), c, cl, Allowed(r.Context(), OpSecrets, c))
		if err != nil {
			return err
		}
		w.Header().Set("Cache-Control", "no-store") // may hold secrets in plaintext
		if rk := q.Get("release_key"); rk != "" && rk == cfg.ReleaseKey {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		api.WriteJSON(w, 200, cfg)
		return nil
	})
	h("POST "+base+"/watch", func(w http.ResponseWriter, r *http.Request) error {
		var req config.WatchRequest
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		for _, n := range req.Namespaces {
			if err := Authorize(r.Context(), OpRead, config.Coord{Env: req.Env, App: req.App, NS: n.NS}); err != nil {
				return err
			}
		}
		hold, err := api.WatchTimeout(r)
		if err != nil {
			return err
		}
		wt, err := s.newWatch(req, hold)
		if err != nil {
			return err
		}
		if wt.peer.IP == "" {
			wt.peer.IP, _, _ = net.SplitHostPort(r.RemoteAddr)
		}
		if req.Content {
			wt.secrets = map[string]bool{}
			for _, n := range req.Namespaces {
				wt.secrets[n.NS] = Allowed(r.Context(), OpSecrets, config.Coord{Env: req.Env, App: req.App, Cluster: wt.req.Cluster, NS: n.NS})
			}
		}
		s.instances.watched(req)
		if err := s.watchTargetsExist(r.Context(), wt); err != nil {
			return err
		}
		if out := s.changed(wt); len(out) > 0 {
			_, body := s.render(r.Context(), wt, out, nil)
			writeAnswer(w, body)
			return nil
		}
		if s.parkWatch(w, r, wt) {
			return nil
		}
		changes, err := s.Watch(r.Context(), req, hold)
		if err != nil {
			if r.Context().Err() != nil {
				return nil // client went away
			}
			if errors.Is(err, ErrServerClosed) {
				return api.Errorf(http.StatusServiceUnavailable, "unavailable", "server is shutting down; reconnect")
			}
			return err
		}
		_, body := s.render(r.Context(), wt, changes, nil)
		writeAnswer(w, body)
		return nil
	})
}

func optInt(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" || v == "draft" || v == "current" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, api.BadRequest("%s %q: want a release id, \"current\" or \"draft\"", name, v)
	}
	return n, nil
}

func coordOf(r *http.Request) config.Coord {
	return config.Coord{Env: r.PathValue("env"), App: r.PathValue("app"), Cluster: r.PathValue("cluster"), NS: r.PathValue("ns")}
}

// nsCall adapts a namespace operation with a JSON body: it checks perm on
// the namespace, decodes Req, runs fn and answers with status.
func nsCall[Req any](op Op, status int, fn func(ctx context.Context, actor string, c config.Coord, req Req) (any, error)) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		c := coordOf(r)
		if err := Authorize(r.Context(), op, c); err != nil {
			return err
		}
		var req Req
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		out, err := fn(r.Context(), auth.Actor(r.Context()), c, req)
		if err != nil {
			return err
		}
		api.WriteJSON(w, status, out)
		return nil
	}
}

// nsRead adapts a read of a namespace: it checks read permission, runs fn
// and answers 200.
func nsRead(fn func(r *http.Request, c config.Coord) (any, error)) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		c := coordOf(r)
		if err := Authorize(r.Context(), OpRead, c); err != nil {
			return err
		}
		out, err := fn(r, c)
		if err != nil {
			return err
		}
		api.WriteJSON(w, http.StatusOK, out)
		return nil
	}
}
