package server

import (
	"context"
	"errors"

	"github.com/tangram-dev/tangram/internal/apirpc"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/rpc"
	"github.com/tangram-dev/tangram/txn"
)

// checkApp checks perm on the app that owns xid.
func (s *Server) checkApp(ctx context.Context, perm auth.Perm, xid string) error {
	app, ok := s.apps.get(xid)
	if !ok {
		if err := s.st.QueryRowContext(ctx, `SELECT app FROM txn_globals WHERE xid = ?`, xid).Scan(&app); err != nil {
			if _, lerr := s.load(ctx, xid, false); lerr != nil {
				return lerr
			}
			return err
		}
		s.apps.put(xid, app)
	}
	return auth.Check(ctx, perm, "", app, "")
}

// checkLocksPerm: asking about row locks inside a transaction needs read
// permission on its app; outside one (a local transaction that respects
// global locks), any authenticated caller may ask.
func (s *Server) checkLocksPerm(ctx context.Context, xid string) error {
	if xid != "" {
		return s.checkApp(ctx, auth.PermRead, xid)
	}
	return auth.Check(ctx, auth.PermRead, "", "", "")
}

// RegisterRPC registers the coordinator's methods (service tangram.Txn):
// starting and deciding a transaction needs edit permission on its app,
// reading it read permission.
func (s *Server) RegisterRPC(srv *rpc.Server) error {
	e := apirpc.Error
	return errors.Join(
		rpc.Handle(srv, txn.MethodBegin, func(ctx context.Context, req *txn.BeginRequest) (*txn.Global, error) {
			if err := auth.Check(ctx, auth.PermEdit, "", req.App, ""); err != nil {
				return nil, e(err)
			}
			g, err := s.Begin(ctx, *req)
			return &g, e(err)
		}),
		rpc.Handle(srv, txn.MethodRegister, func(ctx context.Context, req *txn.RegisterRequest) (*txn.RegisterReply, error) {
			if err := s.checkApp(ctx, auth.PermEdit, req.XID); err != nil {
				return nil, e(err)
			}
			rep, err := s.Register(ctx, *req)
			return &rep, e(err)
		}),
		rpc.Handle(srv, txn.MethodLocks, func(ctx context.Context, req *txn.LocksRequest) (*txn.LocksReply, error) {
			if err := s.checkLocksPerm(ctx, req.XID); err != nil {
				return nil, e(err)
			}
			rep, err := s.Locks(ctx, *req)
			return &rep, e(err)
		}),
		rpc.Handle(srv, txn.MethodSubmit, func(ctx context.Context, req *txn.SubmitRequest) (*txn.Global, error) {
			var err error
			if len(req.Steps) > 0 || req.Mode == txn.ModeSaga {
				err = auth.Check(ctx, auth.PermEdit, "", req.App, "")
			} else {
				err = s.checkApp(ctx, auth.PermEdit, req.XID)
			}
			if err != nil {
				return nil, e(err)
			}
			g, err := s.Submit(ctx, *req)
			return &g, e(err)
		}),
		rpc.Handle(srv, txn.MethodAbort, func(ctx context.Context, req *txn.XIDRequest) (*txn.Global, error) {
			if err := s.checkApp(ctx, auth.PermEdit, req.XID); err != nil {
				return nil, e(err)
			}
			g, err := s.Abort(ctx, *req)
			return &g, e(err)
		}),
		rpc.Handle(srv, txn.MethodRetry, func(ctx context.Context, req *txn.XIDRequest) (*txn.Global, error) {
			if err := s.checkApp(ctx, auth.PermEdit, req.XID); err != nil {
				return nil, e(err)
			}
			g, err := s.Retry(ctx, *req)
			return &g, e(err)
		}),
		rpc.Handle(srv, txn.MethodGet, func(ctx context.Context, req *txn.XIDRequest) (*txn.Global, error) {
			if err := s.checkApp(ctx, auth.PermRead, req.XID); err != nil {
				return nil, e(err)
			}
			g, err := s.Get(ctx, req.XID)
			return &g, e(err)
		}),
		rpc.Handle(srv, txn.MethodList, func(ctx context.Context, req *txn.ListRequest) (*txn.ListReply, error) {
			if err := auth.Check(ctx, auth.PermRead, "", req.App, ""); err != nil {
				return nil, e(err)
			}
			r, err := s.List(ctx, *req)
			if err == nil {
				r.Items = auth.Visible(ctx, r.Items, func(g txn.Global) (string, string, string) { return "", g.App, "" })
			}
			return &r, e(err)
		}),
	)
}
