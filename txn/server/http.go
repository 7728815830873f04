package server

import (
	"context"
	"net/http"
	"strconv"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/txn"
)

const apiBase = "/api/v1/txn"

// APIRoutes lists the routes Mount serves.
func APIRoutes() []apidoc.Route {
	t := "txn"
	x := apiBase + "/transactions/{xid}"
	return []apidoc.Route{
		{Method: "GET", Path: apiBase + "/transactions", Tag: t, Summary: "Transactions the caller may read, newest first",
			Query: []apidoc.Param{apidoc.Q("status", "prepared, committing, aborting, committed, aborted or failed"), apidoc.Q("mode", "saga or tcc"),
				apidoc.Q("app", "the owning app"), apidoc.Q("limit", "page size (default 100, at most 500)"), apidoc.Q("cursor", "next_cursor of the previous page")},
			Response: api.List[txn.Global]{}},
		{Method: "GET", Path: x, Tag: t, Summary: "A transaction with its branches and the timeline of branch calls", Response: txn.Global{}},
		{Method: "POST", Path: apiBase + "/begin", Tag: t, Summary: "Begin a TCC transaction (prepared until submitted or aborted)", Body: txn.BeginRequest{}, Response: txn.Global{}},
		{Method: "POST", Path: apiBase + "/register", Tag: t, Summary: "Register a branch (confirm and cancel URLs; AT: with its row locks) of a prepared TCC, XA or AT transaction", Body: txn.RegisterRequest{}, Response: txn.RegisterReply{}},
		{Method: "POST", Path: apiBase + "/locks", Tag: t, Summary: "Whether rows of a resource are free of other transactions' AT row locks", Body: txn.LocksRequest{}, Response: txn.LocksReply{}},
		{Method: "POST", Path: apiBase + "/submit", Tag: t, Summary: "Commit a TCC transaction, or submit a saga (steps) to run", Body: txn.SubmitRequest{}, Response: txn.Global{}},
		{Method: "POST", Path: x + "/retry", Tag: t, Summary: "Resume a transaction parked as failed, or retry a pending one now", Body: txn.XIDRequest{}, Response: txn.Global{}},
		{Method: "POST", Path: x + "/abort", Tag: t, Summary: "Roll back a prepared transaction or a saga parked as failed", Body: txn.XIDRequest{}, Response: txn.Global{}},
	}
}

// Mount serves the coordinator's API under /api/v1/txn/. An operator's
// retry and abort are audited.
func (s *Server) Mount(mux api.Mux, wrap func(http.Handler) http.Handler) {
	h := func(pattern string, fn api.HandlerFunc) { mux.Handle(pattern, wrap(api.Handler(s.log, fn))) }
	h("GET "+apiBase+"/transactions", func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		req := txn.ListRequest{Status: txn.Status(q.Get("status")), Mode: txn.Mode(q.Get("mode")), App: q.Get("app"), Cursor: q.Get("cursor")}
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return api.BadRequest("limit %q: want a positive integer", v)
			}
			req.Limit = n
		}
		if err := auth.Check(r.Context(), auth.PermRead, "", req.App, ""); err != nil {
			return err
		}
		rep, err := s.List(r.Context(), req)
		if err != nil {
			return err
		}
		items := auth.Visible(r.Context(), rep.Items, func(g txn.Global) (string, string, string) { return "", g.App, "" })
		api.WriteJSON(w, 200, api.List[txn.Global]{Items: items, NextCursor: rep.Next})
		return nil
	})
	h("GET "+apiBase+"/transactions/{xid}", func(w http.ResponseWriter, r *http.Request) error {
		xid := r.PathValue("xid")
		if err := s.checkApp(r.Context(), auth.PermRead, xid); err != nil {
			return err
		}
		g, err := s.Get(r.Context(), xid)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, g)
		return nil
	})
	h("POST "+apiBase+"/begin", func(w http.ResponseWriter, r *http.Request) error {
		var req txn.BeginRequest
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		if err := auth.Check(r.Context(), auth.PermEdit, "", req.App, ""); err != nil {
			return err
		}
		g, err := s.Begin(r.Context(), req)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, g)
		return nil
	})
	h("POST "+apiBase+"/register", func(w http.ResponseWriter, r *http.Request) error {
		var req txn.RegisterRequest
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		if err := s.checkApp(r.Context(), auth.PermEdit, req.XID); err != nil {
			return err
		}
		rep, err := s.Register(r.Context(), req)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, rep)
		return nil
	})
	h("POST "+apiBase+"/locks", func(w http.ResponseWriter, r *http.Request) error {
		var req txn.LocksRequest
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		if err := s.checkLocksPerm(r.Context(), req.XID); err != nil {
			return err
		}
		rep, err := s.Locks(r.Context(), req)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, rep)
		return nil
	})
	h("POST "+apiBase+"/submit", func(w http.ResponseWriter, r *http.Request) error {
		var req txn.SubmitRequest
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		var err error
		if len(req.Steps) > 0 || req.Mode == txn.ModeSaga {
			err = auth.Check(r.Context(), auth.PermEdit, "", req.App, "")
		} else {
			err = s.checkApp(r.Context(), auth.PermEdit, req.XID)
		}
		if err != nil {
			return err
		}
		g, err := s.Submit(r.Context(), req)
		if err != nil {
			return err
		}
		api.WriteJSON(w, 200, g)
		return nil
	})
	decide := func(abort bool) api.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) error {
			var req txn.XIDRequest
			if r.ContentLength != 0 {
				if err := api.Decode(r, &req); err != nil {
					return err
				}
			}
			req.XID = r.PathValue("xid")
			if err := s.checkApp(r.Context(), auth.PermEdit, req.XID); err != nil {
				return err
			}
			before, err := s.load(r.Context(), req.XID, false)
			if err != nil {
				return err
			}
			var g txn.Global
			if abort {
				g, err = s.Abort(r.Context(), req)
			} else {
				g, err = s.Retry(r.Context(), req)
			}
			if err != nil {
				return err
			}
			action := "txn.retry"
			if abort {
				action = "txn.abort"
			}
			s.AuditAction(r.Context(), action, before, g)
			api.WriteJSON(w, 200, g)
			return nil
		}
	}
	h("POST "+apiBase+"/transactions/{xid}/retry", decide(false))
	h("POST "+apiBase+"/transactions/{xid}/abort", decide(true))
}

// AuditAction records an operator's retry or abort of a transaction (the
// API's and the console's buttons): its status and reason before and
// after.
func (s *Server) AuditAction(ctx context.Context, action string, before, after txn.Global) {
	e := audit.Entry{Actor: auth.Actor(ctx), Action: action, Resource: "txn/" + before.App + "/" + before.XID,
		Before: audit.Value(map[string]any{"status": before.Status, "reason": before.Reason}),
		After:  audit.Value(map[string]any{"status": after.Status, "reason": after.Reason})}
	if err := audit.Record(ctx, s.st, e); err != nil {
		s.log.Error("txn: audit record failed", "action", action, "err", err)
	}
}
