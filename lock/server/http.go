package server

import (
	"net/http"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/lock"
)

const apiBase = "/api/v1/lock"

// APIRoutes lists the routes Mount serves.
func APIRoutes() []apidoc.Route {
	t := "lock"
	return []apidoc.Route{
		{Method: "GET", Path: apiBase + "/locks", Tag: t, Summary: "The locks the caller may read: holder and queue of each", Response: api.List[lock.LockInfo]{}},
		{Method: "GET", Path: apiBase + "/nodes", Tag: t, Summary: "The children of a node, in sequence order", Query: []apidoc.Param{apidoc.Q("path", "the parent path, /app/...")}, Response: api.List[lock.Node]{}},
		{Method: "GET", Path: apiBase + "/sessions", Tag: t, Summary: "Live sessions (an admin sees all; others their own)", Response: api.List[lock.Session]{}},
		{Method: "DELETE", Path: apiBase + "/sessions/{id}", Tag: t, Summary: "End a session now, deleting its ephemeral nodes (its own principal or an admin)", Status: 204},
	}
}

// VisibleLocks keeps the locks the caller may read (read permission on
// the app their name starts with).
func VisibleLocks(r *http.Request, ls []lock.LockInfo) []lock.LockInfo {
	return auth.Visible(r.Context(), ls, func(l lock.LockInfo) (string, string, string) { return "", lock.PathApp("/" + l.Name), "" })
}

// Mount serves the lock API under /api/v1/lock/.
func (s *Server) Mount(mux api.Mux, wrap func(http.Handler) http.Handler) {
	h := func(pattern string, fn api.HandlerFunc) { mux.Handle(pattern, wrap(api.Handler(s.log, fn))) }
	h("GET "+apiBase+"/locks", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
			return err
		}
		ls, err := s.Locks(r.Context())
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[lock.LockInfo]{Items: VisibleLocks(r, ls)})
		return nil
	})
	h("GET "+apiBase+"/nodes", func(w http.ResponseWriter, r *http.Request) error {
		path := r.URL.Query().Get("path")
		if err := checkPath(r.Context(), auth.PermRead, path); err != nil {
			return err
		}
		ns, err := s.Children(r.Context(), path)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[lock.Node]{Items: ns})
		return nil
	})
	h("GET "+apiBase+"/sessions", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
			return err
		}
		ss, err := s.Sessions(r.Context())
		if err != nil {
			return err
		}
		if who := principalOf(r.Context()); who != "" {
			mine := ss[:0]
			for _, x := range ss {
				if x.Principal == who {
					mine = append(mine, x)
				}
			}
			ss = mine
		}
		api.WriteJSON(w, 200, api.List[lock.Session]{Items: ss})
		return nil
	})
	h("DELETE "+apiBase+"/sessions/{id}", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
			return err
		}
		if err := s.CloseSession(r.Context(), principalOf(r.Context()), r.PathValue("id")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}
