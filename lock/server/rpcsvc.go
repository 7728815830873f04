package server

import (
	"context"
	"errors"
	"time"

	"github.com/tangram-dev/tangram/internal/apirpc"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/lock"
	"github.com/tangram-dev/tangram/rpc"
)

// principalOf names the caller for session ownership; "" for an admin,
// who may act on any session.
func principalOf(ctx context.Context) string {
	p := auth.FromContext(ctx)
	if p == nil {
		return "?"
	}
	if p.IsAdmin() {
		return ""
	}
	return p.Name
}

// nameOf is the caller's name as recorded on a session.
func nameOf(ctx context.Context) string {
	if p := auth.FromContext(ctx); p != nil {
		return p.Name
	}
	return ""
}

// checkPath checks perm on the app that owns path (its first segment).
func checkPath(ctx context.Context, perm auth.Perm, path string) error {
	if err := lock.ValidPath(path); err != nil {
		return err
	}
	return auth.Check(ctx, perm, "", lock.PathApp(path), "")
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

// RegisterRPC registers the lock methods (service tangram.Lock). Sessions
// need edit permission on some app and belong to who opened them; nodes
// need edit (to write) or read permission on the app their path starts
// with.
func (s *Server) RegisterRPC(srv *rpc.Server) error {
	e := apirpc.Error
	return errors.Join(
		rpc.Handle(srv, lock.MethodOpen, func(ctx context.Context, req *lock.SessionRequest) (*lock.Session, error) {
			if err := auth.Check(ctx, auth.PermEdit, "", "", ""); err != nil {
				return nil, e(err)
			}
			ss, err := s.Open(ctx, nameOf(ctx), req.Owner, req.TTLMs)
			return &ss, e(err)
		}),
		rpc.Handle(srv, lock.MethodKeepAlive, func(ctx context.Context, req *lock.SessionRequest) (*lock.Session, error) {
			ss, err := s.KeepAlive(ctx, principalOf(ctx), req.ID)
			return &ss, e(err)
		}),
		rpc.Handle(srv, lock.MethodClose, func(ctx context.Context, req *lock.SessionRequest) (*lock.Empty, error) {
			return &lock.Empty{}, e(s.CloseSession(ctx, principalOf(ctx), req.ID))
		}),
		rpc.Handle(srv, lock.MethodCreate, func(ctx context.Context, req *lock.NodeRequest) (*lock.Node, error) {
			check := req.Path
			if req.Sequential {
				check += "0"
			}
			if err := checkPath(ctx, auth.PermEdit, check); err != nil {
				return nil, e(err)
			}
			n, err := s.Create(ctx, principalOf(ctx), *req)
			return &n, e(err)
		}),
		rpc.Handle(srv, lock.MethodDelete, func(ctx context.Context, req *lock.NodeRequest) (*lock.Empty, error) {
			if err := checkPath(ctx, auth.PermEdit, req.Path); err != nil {
				return nil, e(err)
			}
			return &lock.Empty{}, e(s.Delete(ctx, req.Path))
		}),
		rpc.Handle(srv, lock.MethodGet, func(ctx context.Context, req *lock.NodeRequest) (*lock.Node, error) {
			if err := checkPath(ctx, auth.PermRead, req.Path); err != nil {
				return nil, e(err)
			}
			n, err := s.Get(ctx, req.Path)
			return &n, e(err)
		}),
		rpc.Handle(srv, lock.MethodChildren, func(ctx context.Context, req *lock.NodeRequest) (*lock.NodesReply, error) {
			if err := checkPath(ctx, auth.PermRead, req.Path); err != nil {
				return nil, e(err)
			}
			ns, err := s.Children(ctx, req.Path)
			return &lock.NodesReply{Nodes: ns}, e(err)
		}),
		rpc.Handle(srv, lock.MethodWait, func(ctx context.Context, req *lock.WaitRequest) (*lock.WaitReply, error) {
			if err := checkPath(ctx, auth.PermRead, req.Path); err != nil {
				return nil, e(err)
			}
			done, err := s.Wait(ctx, req.Path, ms(req.TimeoutMs))
			return &lock.WaitReply{Done: done}, e(err)
		}),
		rpc.Handle(srv, lock.MethodAwaitHead, func(ctx context.Context, req *lock.WaitRequest) (*lock.WaitReply, error) {
			if err := checkPath(ctx, auth.PermRead, req.Path); err != nil {
				return nil, e(err)
			}
			done, err := s.AwaitHead(ctx, req.Path, ms(req.TimeoutMs))
			return &lock.WaitReply{Done: done}, e(err)
		}),
		rpc.Handle(srv, lock.MethodAcquire, func(ctx context.Context, req *lock.AcquireRequest) (*lock.AcquireReply, error) {
			parent, err := lock.LockParent(req.Name)
			if err != nil {
				return nil, e(err)
			}
			if err := checkPath(ctx, auth.PermEdit, parent); err != nil {
				return nil, e(err)
			}
			rep, err := s.Acquire(ctx, principalOf(ctx), *req)
			return &rep, e(err)
		}),
	)
}
