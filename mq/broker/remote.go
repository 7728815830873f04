package broker

import (
	"context"
	"errors"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// Remote returns Config.Authenticate, Config.Register and Config.Audit for
// a broker that runs apart from the servers (`tangram broker`): a client's
// token is checked by the first server that answers (an Unauthenticated
// answer is final), the broker's topics are registered with every server,
// since each keeps its own name table, and audit entries go to the first
// server that takes them (the servers of a cluster share one store).
func Remote(servers []*rpc.Client) (authenticate func(context.Context, string) (*auth.Principal, error),
	register func(context.Context, wire.BrokerInfo) error, record func(context.Context, auth.AuditRequest) error) {
	authenticate = func(ctx context.Context, token string) (*auth.Principal, error) {
		var errs []error
		for _, c := range servers {
			rep, err := rpc.Call[auth.PrincipalReply](rpc.WithOutgoing(ctx, rpc.MetaAuthorization, "Bearer "+token), c, auth.MethodPrincipal, &struct{}{})
			if err == nil {
				return &rep.Principal, nil
			}
			if rpc.CodeOf(err) == rpc.Unauthenticated {
				return nil, err
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
	register = func(ctx context.Context, in wire.BrokerInfo) error {
		var errs []error
		for _, c := range servers {
			if _, err := rpc.Call[wire.RouteReply](ctx, c, wire.MethodRegisterBroker, &in); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	record = func(ctx context.Context, e auth.AuditRequest) error {
		var errs []error
		for _, c := range servers {
			_, err := rpc.Call[struct{}](ctx, c, auth.MethodAudit, &e)
			if err == nil {
				return nil
			}
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	return authenticate, register, record
}
