package console

import (
	"net/http"

	"github.com/tangram-dev/tangram/internal/auth"
	lockserver "github.com/tangram-dev/tangram/lock/server"
)

func (c *Console) registerLocks(mux *http.ServeMux) {
	if c.cfg.Locks == nil {
		return
	}
	mux.Handle("GET /locks", c.page(c.locksPage))
	mux.Handle("POST /locks/sessions/{id}/end", c.page(c.endLockSession))
}

// locksPage: every lock the caller may read with its holder, fencing
// token and queue; the sessions (an admin's: all; others: their own),
// each with an End button that frees its locks.
func (c *Console) locksPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	ls, err := c.cfg.Locks.Locks(r.Context())
	if err != nil {
		return err
	}
	ss, err := c.cfg.Locks.Sessions(r.Context())
	if err != nil {
		return err
	}
	if p := auth.FromContext(r.Context()); !p.IsAdmin() {
		mine := ss[:0]
		for _, s := range ss {
			if s.Principal == p.Name {
				mine = append(mine, s)
			}
		}
		ss = mine
	}
	c.render(w, r, "locks", "Locks", map[string]any{"Locks": lockserver.VisibleLocks(r, ls), "Sessions": ss})
	return nil
}

func (c *Console) endLockSession(w http.ResponseWriter, r *http.Request) error {
	p := auth.FromContext(r.Context())
	who := p.Name
	if p.IsAdmin() {
		who = ""
	}
	id := r.PathValue("id")
	if err := c.cfg.Locks.CloseSession(r.Context(), who, id); err != nil {
		return err
	}
	c.back(w, r, "session "+id+" ended; its locks passed on", "")
	return nil
}
