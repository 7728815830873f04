package server

import (
	"context"

	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/rpc"
)

// Resolver is an rpc.Resolver for a service, read from this registry in
// the same process (the transaction coordinator calling participants by
// service name): the healthy, enabled instances with a weight above zero,
// pushed again after every change of the service.
func (r *Registry) Resolver(k registry.Key) rpc.Resolver { return localResolver{r: r, k: k} }

type localResolver struct {
	r *Registry
	k registry.Key
}

func (l localResolver) Watch(ctx context.Context, update func([]rpc.Address)) error {
	for {
		snap := l.r.Get(l.k)
		out := []rpc.Address{}
		for _, in := range snap.Instances {
			if in.Healthy && in.Enabled && in.Weight > 0 {
				out = append(out, rpc.Address{Addr: in.Addr(), Weight: int(in.Weight), Zone: in.Zone, Meta: in.Metadata})
			}
		}
		update(out)
		// Wait for the next change after the list just read.
		if _, err := l.r.Watch(ctx, l.k, snap.Revision); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}
