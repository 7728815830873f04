package server

import (
	"context"
	"errors"

	"github.com/tangram-dev/tangram/idgen"
	"github.com/tangram-dev/tangram/internal/apirpc"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/rpc"
)

// holderOf names the caller on a lease: the holder it gave, after its
// principal.
func holderOf(ctx context.Context, given string) string {
	name := "?"
	if p := auth.FromContext(ctx); p != nil {
		name = p.Name
	}
	if given == "" {
		return name
	}
	return name + " " + given
}

// RegisterRPC registers the ID methods (service tangram.ID); each needs
// edit permission.
func (s *Server) RegisterRPC(srv *rpc.Server) error {
	e := apirpc.Error
	edit := func(ctx context.Context) error { return auth.Check(ctx, auth.PermEdit, "", "", "") }
	return errors.Join(
		rpc.Handle(srv, idgen.MethodSegment, func(ctx context.Context, req *idgen.SegmentRequest) (*idgen.Segment, error) {
			if err := edit(ctx); err != nil {
				return nil, e(err)
			}
			sg, err := s.Segment(ctx, req.Tag, req.Step)
			return &sg, e(err)
		}),
		rpc.Handle(srv, idgen.MethodNext, func(ctx context.Context, req *idgen.NextRequest) (*idgen.NextReply, error) {
			if err := edit(ctx); err != nil {
				return nil, e(err)
			}
			ids, err := s.Next(ctx, req.Tag, req.Count)
			return &idgen.NextReply{IDs: ids}, e(err)
		}),
		rpc.Handle(srv, idgen.MethodLease, func(ctx context.Context, req *idgen.LeaseRequest) (*idgen.WorkerLease, error) {
			if err := edit(ctx); err != nil {
				return nil, e(err)
			}
			wl, err := s.Lease(ctx, holderOf(ctx, req.Holder), *req)
			return &wl, e(err)
		}),
		rpc.Handle(srv, idgen.MethodRenew, func(ctx context.Context, req *idgen.LeaseRequest) (*idgen.WorkerLease, error) {
			if err := edit(ctx); err != nil {
				return nil, e(err)
			}
			wl, err := s.Renew(ctx, *req)
			return &wl, e(err)
		}),
		rpc.Handle(srv, idgen.MethodRelease, func(ctx context.Context, req *idgen.LeaseRequest) (*idgen.Empty, error) {
			if err := edit(ctx); err != nil {
				return nil, e(err)
			}
			return &idgen.Empty{}, e(s.Release(ctx, *req))
		}),
	)
}
