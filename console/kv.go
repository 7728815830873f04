package console

import (
	"net/http"
	"strconv"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
)

func (c *Console) registerKV(mux *http.ServeMux) {
	if c.cfg.KV == nil {
		return
	}
	mux.Handle("GET /kv", c.page(c.kvPage))
}

// kvPage: the store's memory, persistence and busiest commands, keys by
// pattern with their type and TTL, and the slow log. Keys can hold
// anything, so the page is for admins.
func (c *Console) kvPage(w http.ResponseWriter, r *http.Request) error {
	p := auth.FromContext(r.Context())
	if p == nil || !p.IsAdmin() {
		return api.Errorf(http.StatusForbidden, "forbidden", "the kv page is for admins")
	}
	q := r.URL.Query()
	pattern := q.Get("pattern")
	if pattern == "" {
		pattern = "*"
	}
	db, _ := strconv.Atoi(q.Get("db"))
	keys, more := c.cfg.KV.Browse(db, pattern, 200)
	c.render(w, r, "kv", "kv", map[string]any{"O": c.cfg.KV.Overview(), "Keys": keys, "More": more, "Pattern": pattern, "DB": db})
	return nil
}
