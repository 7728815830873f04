package server

import (
	"net/http"

	"github.com/tangram-dev/tangram/idgen"
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/internal/auth"
)

const apiBase = "/api/v1/id"

// APIRoutes lists the routes Mount serves.
func APIRoutes() []apidoc.Route {
	t := "id"
	return []apidoc.Route{
		{Method: "POST", Path: apiBase + "/next", Tag: t, Summary: "IDs of a segment tag (created on first use), ascending", Body: idgen.NextRequest{}, Response: idgen.NextReply{}},
		{Method: "GET", Path: apiBase + "/tags", Tag: t, Summary: "The segment tags: the end of the last range handed out and the step", Response: api.List[idgen.Tag]{}},
		{Method: "POST", Path: apiBase + "/tags", Tag: t, Summary: "Create a tag (start, step) or change its step and description", Body: idgen.TagRequest{}, Response: idgen.Tag{}},
		{Method: "GET", Path: apiBase + "/buffers", Tag: t, Summary: "This server's double buffers per tag", Response: api.List[idgen.State]{}},
		{Method: "GET", Path: apiBase + "/workers", Tag: t, Summary: "Leased worker numbers (live and expired) of every pool", Response: api.List[idgen.WorkerLease]{}},
	}
}

// Mount serves the ID API under /api/v1/id/.
func (s *Server) Mount(mux api.Mux, wrap func(http.Handler) http.Handler) {
	h := func(pattern string, fn api.HandlerFunc) { mux.Handle(pattern, wrap(api.Handler(s.log, fn))) }
	read := func(r *http.Request) error { return auth.Check(r.Context(), auth.PermRead, "", "", "") }
	h("POST "+apiBase+"/next", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermEdit, "", "", ""); err != nil {
			return err
		}
		var req idgen.NextRequest
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		ids, err := s.Next(r.Context(), req.Tag, req.Count)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, idgen.NextReply{IDs: ids})
		return nil
	})
	h("GET "+apiBase+"/tags", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		ts, err := s.Tags(r.Context())
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[idgen.Tag]{Items: ts})
		return nil
	})
	h("POST "+apiBase+"/tags", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermAdmin, "", "", ""); err != nil {
			return err
		}
		var req idgen.TagRequest
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		t, err := s.CreateTag(r.Context(), req)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, t)
		return nil
	})
	h("GET "+apiBase+"/buffers", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[idgen.State]{Items: s.Buffers()})
		return nil
	})
	h("GET "+apiBase+"/workers", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		ws, err := s.Workers(r.Context())
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, api.List[idgen.WorkerLease]{Items: ws})
		return nil
	})
}
