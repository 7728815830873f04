package registry

import (
	"context"
	"errors"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/rpc"
)

// HeartbeatRequest renews several instances of one client at once.
type HeartbeatRequest struct {
	Key Key      `msgpack:"key"`
	IDs []string `msgpack:"ids"`
}

// HeartbeatReply lists the instances the server does not know (the client
// registers them again).
type HeartbeatReply struct {
	Unknown []string `msgpack:"unknown,omitempty"`
}

// InstanceRef names one instance.
type InstanceRef struct {
	Key Key    `msgpack:"key"`
	ID  string `msgpack:"id"`
}

// WatchRequest opens a watch stream on a service from a revision (0: start
// with the full list).
type WatchRequest struct {
	Key      Key   `msgpack:"key"`
	Revision int64 `msgpack:"revision"`
	// Node is the server Revision came from; on another server the watch
	// starts with the full list.
	Node string `msgpack:"node"`
}

// Empty is an empty message.
type Empty struct{}

// rpcError maps registry and auth errors to RPC codes.
func rpcError(err error) error { return api.RPCError(err, ErrNotFound, ErrInvalid) }

// RegisterRPC registers the registry's methods ("tangram.Registry/…") on
// srv: Register, Heartbeat, Deregister, Get and the Watch stream, which sends
// the service's list and then every change as it happens. Permissions are
// those of the HTTP API; the server's auth interceptor puts the caller in
// the context.
func (reg *Registry) RegisterRPC(srv *rpc.Server) error {
	errs := []error{
		rpc.Handle(srv, "tangram.Registry/Register", func(ctx context.Context, in *Instance) (*Instance, error) {
			in.Key.fill()
			if err := check(ctx, auth.PermEdit, in.Key); err != nil {
				return nil, rpcError(err)
			}
			out, err := reg.Register(ctx, *in)
			if err == nil && !out.Ephemeral {
				reg.audit(ctx, "registry.register", out, nil, out)
			}
			return out, rpcError(err)
		}),
		rpc.Handle(srv, "tangram.Registry/Heartbeat", func(ctx context.Context, req *HeartbeatRequest) (*HeartbeatReply, error) {
			req.Key.fill()
			if err := check(ctx, auth.PermEdit, req.Key); err != nil {
				return nil, rpcError(err)
			}
			var out HeartbeatReply
			for _, id := range req.IDs {
				if err := reg.Heartbeat(ctx, req.Key, id); err != nil {
					out.Unknown = append(out.Unknown, id)
				}
			}
			return &out, nil
		}),
		rpc.Handle(srv, "tangram.Registry/Deregister", func(ctx context.Context, ref *InstanceRef) (*Empty, error) {
			ref.Key.fill()
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
			return &Empty{}, nil
		}),
		rpc.Handle(srv, "tangram.Registry/Get", func(ctx context.Context, k *Key) (*Snapshot, error) {
			k.fill()
			if err := check(ctx, auth.PermRead, *k); err != nil {
				return nil, rpcError(err)
			}
			if err := k.validate(); err != nil {
				return nil, rpcError(err)
			}
			snap := reg.Get(*k)
			return &snap, nil
		}),
		rpc.HandleStream(srv, "tangram.Registry/Watch", func(ss *rpc.ServerStream[WatchRequest, Snapshot]) error {
			req, err := ss.Recv()
			if err != nil {
				return err
			}
			ctx := ss.Context()
			req.Key.fill()
			if err := check(ctx, auth.PermRead, req.Key); err != nil {
				return rpcError(err)
			}
			if err := req.Key.validate(); err != nil {
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
