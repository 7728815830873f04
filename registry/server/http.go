package server

import (
	"context"
	"net/http"
	"strconv"

	"github.com/tangram-dev/tangram/registry"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/auth"
)

// Permissions: reading needs read on the namespace (as the env scope) and
// service (as the app scope); registering, renewing and deregistering need
// edit (a service token); operator changes (weight, drain, metadata) need
// release. Operator changes and persistent registrations are audited;
// ephemeral registrations and heartbeats, which clients make every few
// seconds, are not.
func check(ctx context.Context, p auth.Perm, k registry.Key) error {
	return auth.Check(ctx, p, k.Namespace, k.Service, "")
}

func keyOf(r *http.Request) registry.Key {
	k := registry.Key{Namespace: r.PathValue("ns"), Group: r.PathValue("group"), Service: r.PathValue("service")}
	k.Fill()
	return k
}

// Mount mounts the registry API under /api/v1/registry; wrap
// authenticates every request.
func (reg *Registry) Mount(mux api.Mux, wrap func(http.Handler) http.Handler) {
	h := func(pattern string, fn api.HandlerFunc) {
		mux.Handle(pattern, wrap(api.Handler(reg.log, fn)))
	}
	const base = "/api/v1/registry"
	const svcPath = base + "/services/{ns}/{group}/{service}"

	h("GET "+base+"/status", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
			return err
		}
		api.WriteJSON(w, 200, reg.Status())
		return nil
	})
	h("GET "+base+"/services", func(w http.ResponseWriter, r *http.Request) error {
		ns := r.URL.Query().Get("namespace")
		if err := auth.Check(r.Context(), auth.PermRead, ns, "", ""); err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[registry.ServiceInfo]{Items: VisibleServices(r.Context(), reg.Services(ns))})
		return nil
	})
	h("GET "+svcPath, func(w http.ResponseWriter, r *http.Request) error {
		k := keyOf(r)
		if err := check(r.Context(), auth.PermRead, k); err != nil {
			return err
		}
		if err := k.Validate(); err != nil {
			return err
		}
		api.WriteJSON(w, 200, reg.Get(k))
		return nil
	})
	// Long poll: answers when the service changed after ?revision=, or after
	// ?timeout= (api.WatchTimeout: default 30 s, at most 60 s) with no
	// changes. A service nobody has registered yet is a valid target:
	// consumers subscribe before providers start.
	h("GET "+svcPath+"/watch", func(w http.ResponseWriter, r *http.Request) error {
		k := keyOf(r)
		if err := check(r.Context(), auth.PermRead, k); err != nil {
			return err
		}
		q := r.URL.Query()
		rev, err := strconv.ParseInt(q.Get("revision"), 10, 64)
		if q.Get("revision") != "" && err != nil {
			return api.BadRequest("revision %q: not a number", q.Get("revision"))
		}
		timeout, err := api.WatchTimeout(r)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		snap, err := reg.Watch(ctx, k, rev)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, snap)
		return nil
	})
	h("POST "+base+"/instances", func(w http.ResponseWriter, r *http.Request) error {
		var in registry.Instance
		if err := api.Decode(r, &in); err != nil {
			return err
		}
		in.Key.Fill()
		if err := check(r.Context(), auth.PermEdit, in.Key); err != nil {
			return err
		}
		out, err := reg.Register(r.Context(), in)
		if err != nil {
			return err
		}
		if !out.Ephemeral {
			reg.audit(r.Context(), "registry.register", out, nil, out)
		}
		api.WriteJSON(w, 200, out)
		return nil
	})
	h("PUT "+svcPath+"/instances/{id}/heartbeat", func(w http.ResponseWriter, r *http.Request) error {
		k := keyOf(r)
		if err := check(r.Context(), auth.PermEdit, k); err != nil {
			return err
		}
		if err := reg.Heartbeat(r.Context(), k, r.PathValue("id")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	h("DELETE "+svcPath+"/instances/{id}", func(w http.ResponseWriter, r *http.Request) error {
		k := keyOf(r)
		if err := check(r.Context(), auth.PermEdit, k); err != nil {
			return err
		}
		before := reg.find(k, r.PathValue("id"))
		if err := reg.Deregister(r.Context(), k, r.PathValue("id")); err != nil {
			return err
		}
		if before != nil && !before.Ephemeral {
			reg.audit(r.Context(), "registry.deregister", before, before, nil)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	h("PATCH "+svcPath+"/instances/{id}", func(w http.ResponseWriter, r *http.Request) error {
		k := keyOf(r)
		if err := check(r.Context(), auth.PermRelease, k); err != nil {
			return err
		}
		var p registry.Patch
		if err := api.Decode(r, &p); err != nil {
			return err
		}
		out, err := reg.Patch(r.Context(), k, r.PathValue("id"), p)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, out)
		return nil
	})
}

// Patch applies an operator's change (Update) and audits it as the caller
// in ctx — what the HTTP API and the console do.
func (reg *Registry) Patch(ctx context.Context, k registry.Key, id string, p registry.Patch) (*registry.Instance, error) {
	k.Fill()
	before := reg.find(k, id)
	out, err := reg.Update(ctx, k, id, p)
	if err != nil {
		return nil, err
	}
	reg.audit(ctx, "registry.update", out, before, out)
	return out, nil
}

// find returns an instance (not to be modified), or nil.
func (reg *Registry) find(k registry.Key, id string) *registry.Instance {
	reg.mu.RLock()
	defer reg.mu.RUnlock()
	if s := reg.svc(k, false); s != nil {
		if in := s.instances.get(id); in != nil {
			return in
		}
	}
	return nil
}

func (reg *Registry) audit(ctx context.Context, action string, in, before, after *registry.Instance) {
	if reg.cfg.Store == nil {
		return
	}
	e := audit.Entry{Actor: auth.Actor(ctx), Action: action, Resource: "registry/" + in.Key.String() + "/" + in.ID}
	if before != nil {
		e.Before = audit.Value(before)
	}
	if after != nil {
		e.After = audit.Value(after)
	}
	if err := audit.Record(ctx, reg.cfg.Store, e); err != nil {
		reg.log.Error("registry: audit record failed", "action", action, "err", err)
	}
}

// VisibleServices keeps the services the caller in ctx may read (the rule
// the API and the console share).
func VisibleServices(ctx context.Context, svcs []registry.ServiceInfo) []registry.ServiceInfo {
	return auth.Visible(ctx, svcs, func(s registry.ServiceInfo) (string, string, string) { return s.Namespace, s.Service, "" })
}
