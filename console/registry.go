package console

import (
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/registry"
	registryserver "github.com/tangram-dev/tangram/registry/server"
)

func (c *Console) registerRegistry(mux *http.ServeMux) {
	if c.cfg.Registry == nil {
		return
	}
	mux.Handle("GET /registry", c.page(c.registryPage))
	mux.Handle("GET /registry/{ns}/{group}/{service}", c.page(c.servicePage))
	mux.Handle("POST /registry/{ns}/{group}/{service}/{id}/{action}", c.page(c.instanceAction))
}

type serviceRow struct {
	registry.ServiceInfo
	Zones string
}

func (c *Console) registryPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	reg := c.cfg.Registry
	ns, q := r.URL.Query().Get("namespace"), strings.ToLower(strings.TrimSpace(r.URL.Query().Get("q")))
	var rows []serviceRow
	nsSeen := map[string]bool{}
	for _, s := range registryserver.VisibleServices(r.Context(), reg.Services("")) {
		nsSeen[s.Namespace] = true
		// The namespace switcher and the search (service or group name).
		if (ns != "" && s.Namespace != ns) || (q != "" && !strings.Contains(strings.ToLower(s.Service), q) && !strings.Contains(strings.ToLower(s.Group), q)) {
			continue
		}
		zones := map[string]int{}
		for _, in := range reg.Get(s.Key).Instances {
			z := in.Zone
			if z == "" {
				z = "-"
			}
			zones[z]++
		}
		var zs []string
		for z, n := range zones {
			zs = append(zs, z+" ("+strconv.Itoa(n)+")")
		}
		sort.Strings(zs)
		rows = append(rows, serviceRow{ServiceInfo: s, Zones: strings.Join(zs, ", ")})
	}
	nss := make([]string, 0, len(nsSeen))
	for n := range nsSeen {
		nss = append(nss, n)
	}
	sort.Strings(nss)
	var cs chartSet
	cs.add(c.metricChart("Instances", "",
		metricLine{class: "line-calls", name: "instances", metric: "tangram_registry_instances", how: maxOf}))
	cs.add(c.metricChart("Heartbeats in the renewal window", "",
		metricLine{class: "line-calls", name: "received", metric: "tangram_registry_renewals"},
		metricLine{class: "line-p95", name: "expected", metric: "tangram_registry_expected_renewals"}))
	c.render(w, r, "registry", "Registry", map[string]any{"Charts": cs, "Status": reg.Status(), "Services": rows, "Namespaces": nss, "NS": ns, "Q": r.URL.Query().Get("q")})
	return nil
}

func serviceKey(r *http.Request) registry.Key {
	return registry.Key{Namespace: r.PathValue("ns"), Group: r.PathValue("group"), Service: r.PathValue("service")}
}

func (c *Console) servicePage(w http.ResponseWriter, r *http.Request) error {
	k := serviceKey(r)
	if err := auth.Check(r.Context(), auth.PermRead, k.Namespace, k.Service, ""); err != nil {
		return err
	}
	snap := c.cfg.Registry.Get(k)
	if len(snap.Instances) == 0 {
		known := false
		for _, s := range c.cfg.Registry.Services(k.Namespace) {
			known = known || s.Key == k
		}
		if !known {
			return api.NotFound("no service %s in the registry", k)
		}
	}
	c.render(w, r, "service", k.Service, map[string]any{"Key": k, "Snapshot": snap,
		"CanOperate": auth.FromContext(r.Context()).Can(auth.PermRelease, k.Namespace, k.Service, "")})
	return nil
}

// instanceAction drains, undrains or reweights an instance (audited).
func (c *Console) instanceAction(w http.ResponseWriter, r *http.Request) error {
	k := serviceKey(r)
	if err := auth.Check(r.Context(), auth.PermRelease, k.Namespace, k.Service, ""); err != nil {
		return err
	}
	id := r.PathValue("id")
	var p registry.Patch
	switch r.PathValue("action") {
	case "drain", "enable":
		on := r.PathValue("action") == "enable"
		p.Enabled = &on
	case "weight":
		n, err := strconv.Atoi(r.FormValue("weight"))
		if err != nil {
			c.back(w, r, "", "weight: not a number")
			return nil
		}
		p.Weight = &n
	case "metadata":
		// key=value pairs separated by spaces or commas; it replaces the
		// instance's metadata (a persistent instance's probe=tcp|http:/path|rpc
		// is its health check).
		p.Metadata = map[string]string{}
		for _, kv := range strings.FieldsFunc(r.FormValue("metadata"), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				c.back(w, r, "", "metadata "+kv+": want key=value")
				return nil
			}
			p.Metadata[k] = v
		}
	default:
		http.NotFound(w, r)
		return nil
	}
	if _, err := c.cfg.Registry.Patch(r.Context(), k, id, p); err != nil {
		return err
	}
	http.Redirect(w, r, "/registry/"+url.PathEscape(k.Namespace)+"/"+url.PathEscape(k.Group)+"/"+url.PathEscape(k.Service)+"?msg="+
		url.QueryEscape("updated "+id), http.StatusSeeOther)
	return nil
}
