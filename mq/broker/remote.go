package broker

import (
	"context"
	"errors"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// Remote returns Config.Authenticate and Config.Register for a broker that
// runs apart from the servers (`tangram broker`): a client's token is
// checked by the first server that answers (an Unauthenticated answer is
// final), and the broker's topics are registered with every server, since
// each keeps its own name table.
func Remote(servers []*rpc.Client) (authenticate func(context.Context, string) (*auth.Principal, error),
	register func(context.Context, wire.BrokerInfo) error) {
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
	return authenticate, register
}
