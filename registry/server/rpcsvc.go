package server

import (
	"context"
	"errors"

	"github.com/tangram-dev/tangram/internal/apirpc"

	"github.com/tangram-dev/tangram/registry"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/rpc"
)

// rpcError maps registry and auth errors to RPC codes.
func rpcError(err error) error { return apirpc.Error(err) }

// RegisterRPC registers the registry's methods ("tangram.Registry/…") on
// srv: Register, Heartbeat, Deregister, Get and the Watch stream, which sends
// the service's list and then every change as it happens. Permissions are
// those of the HTTP API; the server's auth interceptor puts the caller in
// the context.
func (reg *Registry) RegisterRPC(srv *rpc.Server) error {
	errs := []error{
		rpc.Handle(srv, "tangram.Registry/Register", func(ctx context.Context, in *registry.Instance) (*registry.Instance, error) {
			in.Key.Fill()
			if err := check(ctx, auth.PermEdit, in.Key); err != nil {
				return nil, rpcError(err)
			}
			out, err := reg.Register(ctx, *in)
			if err == nil && !out.Ephemeral {
				reg.audit(ctx, "registry.register", out, nil, out)
			}
			return out, rpcError(err)
		}),
		rpc.Handle(srv, "tangram.Registry/Heartbeat", func(ctx context.Context, req *registry.HeartbeatRequest) (*registry.HeartbeatReply, error) {
			req.Key.Fill()
			if err := check(ctx, auth.PermEdit, req.Key); err != nil {
				return nil, rpcError(err)
			}
			var out registry.HeartbeatReply
			for _, id := range req.IDs {
				if err := reg.Heartbeat(ctx, req.Key, id); err != nil {
					out.Unknown = append(out.Unknown, id)
				}
			}
			return &out, nil
		}),
		rpc.Handle(srv, "tangram.Registry/Deregister", func(ctx context.Context, ref *registry.InstanceRef) (*registry.Empty, error) {
			ref.Key.Fill()
			if err := check(ctx, auth.PermEdit, ref.Key); err != nil {
				return nil, rpcError(err)
			}
			before := reg.find(ref.Key, ref.ID)
			if err := reg.Deregister(ctx, ref.Key, ref.ID); err != nil {
				return nil, rpcError(err)
			}
			if before != nil && !before.Ephemeral {
				reg.audit(ctx, "registry.deregister", before, before, nil)
			}
			return &registry.Empty{}, nil
		}),
		rpc.Handle(srv, "tangram.Registry/Get", func(ctx context.Context, k *registry.Key) (*registry.Snapshot, error) {
			k.Fill()
			if err := check(ctx, auth.PermRead, *k); err != nil {
				return nil, rpcError(err)
			}
			if err := k.Validate(); err != nil {
				return nil, rpcError(err)
			}
			snap := reg.Get(*k)
			return &snap, nil
		}),
		rpc.HandleStream(srv, "tangram.Registry/Watch", func(ss *rpc.ServerStream[registry.WatchRequest, registry.Snapshot]) error {
			req, err := ss.Recv()
			if err != nil {
				return err
			}
			ctx := ss.Context()
			req.Key.Fill()
			if err := check(ctx, auth.PermRead, req.Key); err != nil {
				return rpcError(err)
			}
			if err := req.Key.Validate(); err != nil {
				return rpcError(err)
			}
			rev := req.Revision
			if req.Node != reg.cfg.NodeName {
				rev = 0
			}
			return rpcError(reg.serveWatch(ctx, req.Key, rev, ss.TrySendBatch, ss.Send))
		}),
	}
	return errors.Join(errs...)
}
