package console

import (
	"net/http"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/txn"
)

func (c *Console) registerTxns(mux *http.ServeMux) {
	if c.cfg.Txns == nil {
		return
	}
	mux.Handle("GET /txns", c.page(c.txnsPage))
	mux.Handle("GET /txns/{xid}", c.page(c.txnPage))
	mux.Handle("POST /txns/{xid}/retry", c.page(c.txnAction(false)))
	mux.Handle("POST /txns/{xid}/abort", c.page(c.txnAction(true)))
}

// txnsPage: how many transactions are in each state, by mode, and the
// latest ones (filtered by ?status= and ?mode=), each linking to its page.
func (c *Console) txnsPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	counts, err := c.cfg.Txns.Counts(r.Context())
	if err != nil {
		return err
	}
	q := r.URL.Query()
	req := txn.ListRequest{Status: txn.Status(q.Get("status")), Mode: txn.Mode(q.Get("mode")), Limit: 100, Cursor: q.Get("cursor")}
	list, err := c.cfg.Txns.List(r.Context(), req)
	if err != nil {
		return err
	}
	items := auth.Visible(r.Context(), list.Items, func(g txn.Global) (string, string, string) { return "", g.App, "" })
	// The counts cover every app: only an admin sees them.
	if p := auth.FromContext(r.Context()); p == nil || !p.IsAdmin() {
		counts = nil
	}
	c.render(w, r, "txns", "Transactions", map[string]any{"Counts": counts, "Items": items, "Next": list.Next,
		"Status": req.Status, "Mode": req.Mode,
		"Statuses": []txn.Status{txn.StatusPrepared, txn.StatusCommitting, txn.StatusAborting, txn.StatusCommitted, txn.StatusAborted, txn.StatusFailed},
		"Modes":    []txn.Mode{txn.ModeSaga, txn.ModeTCC, txn.ModeXA, txn.ModeAT}})
	return nil
}

// txnPage: one transaction — its decision, branches, and the timeline of
// every branch call — with Retry and Abort where they apply.
func (c *Console) txnPage(w http.ResponseWriter, r *http.Request) error {
	xid := r.PathValue("xid")
	g, err := c.cfg.Txns.Get(r.Context(), xid)
	if err != nil {
		return err
	}
	if err := auth.Check(r.Context(), auth.PermRead, "", g.App, ""); err != nil {
		return err
	}
	canRetry := g.Status == txn.StatusFailed || g.Status == txn.StatusCommitting || g.Status == txn.StatusAborting
	canAbort := g.Status == txn.StatusPrepared || (g.Mode == txn.ModeSaga && (g.Status == txn.StatusFailed || g.Status == txn.StatusCommitting))
	c.render(w, r, "txn", "Transaction "+xid, map[string]any{"T": g, "CanRetry": canRetry, "CanAbort": canAbort})
	return nil
}

func (c *Console) txnAction(abort bool) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		xid := r.PathValue("xid")
		before, err := c.cfg.Txns.Get(r.Context(), xid)
		if err != nil {
			return err
		}
		if err := auth.Check(r.Context(), auth.PermEdit, "", before.App, ""); err != nil {
			return err
		}
		req := txn.XIDRequest{XID: xid, Reason: r.FormValue("reason")}
		var after txn.Global
		action, verb := "txn.retry", "resumed"
		if abort {
			action, verb = "txn.abort", "rolled back"
			after, err = c.cfg.Txns.Abort(r.Context(), req)
		} else {
			after, err = c.cfg.Txns.Retry(r.Context(), req)
		}
		if err != nil {
			c.back(w, r, "", err.Error())
			return nil
		}
		c.cfg.Txns.AuditAction(r.Context(), action, before, after)
		c.back(w, r, "transaction "+xid+" "+verb, "")
		return nil
	}
}
