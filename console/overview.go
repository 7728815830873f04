package console

import (
	"net/http"
	"strings"

	configserver "github.com/tangram-dev/tangram/config/server"
	"github.com/tangram-dev/tangram/internal/auth"
	jobserver "github.com/tangram-dev/tangram/job/server"
	registryserver "github.com/tangram-dev/tangram/registry/server"
)

// overview is the console's home: the platform at a glance — which
// components run, this server's place in its cluster, and counts of what
// the signed-in user may see.
type overview struct {
	Node       string
	Components []string
	Members    []string // registry cluster
	Apps       int      // config apps
	Services   int      // registry services and their instances
	Instances  int
	Jobs       int
	Executors  int
	Partitions []int // job partitions this server holds
	Failed24h  int   // failed runs in the last day (admins: the whole scheduler's; -1 not shown)
	Topics     int   // MQ topics (users', not system ones)
	Brokers    int
	Errors     []string
}

func (c *Console) overviewPage(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	if auth.FromContext(ctx) == nil {
		return auth.ErrUnauthenticated
	}
	p := auth.FromContext(ctx)
	var o overview
	if s := c.cfg.Config; s != nil {
		o.Components = append(o.Components, "config")
		if apps, err := s.ListApps(ctx); err == nil {
			o.Apps = len(configserver.VisibleApps(ctx, apps))
		} else {
			o.Errors = append(o.Errors, "config: "+err.Error())
		}
	}
	if reg := c.cfg.Registry; reg != nil {
		o.Components = append(o.Components, "registry")
		st := reg.Status()
		o.Members = st.Members
		for _, s := range registryserver.VisibleServices(ctx, reg.Services("")) {
			o.Services++
			o.Instances += len(reg.Get(s.Key).Instances)
		}
	}
	if js := c.cfg.Jobs; js != nil {
		o.Components = append(o.Components, "jobs")
		o.Node, o.Partitions = js.Node(), js.Owned()
		if jobs, err := js.List(ctx, ""); err == nil {
			o.Jobs = len(jobserver.VisibleJobs(ctx, jobs))
		} else {
			o.Errors = append(o.Errors, "jobs: "+err.Error())
		}
		o.Failed24h = -1
		if p.IsAdmin() {
			if st, err := js.Stats(ctx); err == nil {
				o.Failed24h = st.ByStatus["failed"]
			}
		}
		if ex, err := js.Executors(ctx, ""); err == nil {
			for _, e := range ex {
				if p.Can(auth.PermRead, "", e.App, "") {
					o.Executors++
				}
			}
		}
	}
	if c.cfg.MQ != nil {
		o.Components = append(o.Components, "mq")
		if cl, err := c.cfg.MQ(ctx); err == nil {
			if ts, err := cl.Topics(ctx, false); err == nil {
				for _, t := range ts {
					if !strings.HasPrefix(t.Name, "%") && p.Can(auth.PermRead, "", t.Name, "") {
						o.Topics++
					}
				}
			} else {
				o.Errors = append(o.Errors, "mq: "+err.Error())
			}
			if bs, err := cl.Brokers(ctx); err == nil {
				o.Brokers = len(bs)
			}
		} else {
			o.Errors = append(o.Errors, "mq: "+err.Error())
		}
	}
	c.render(w, r, "overview", "Overview", o)
	return nil
}
