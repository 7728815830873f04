package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tangram-dev/tangram/rpc/rpcmetrics"

	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/rpc"
)

// HealthReply answers tangram.Health/Check.
type HealthReply struct {
	Status  string `json:"status" msgpack:"status"`
	Version string `json:"version" msgpack:"version"`
}

// WhoAmIReply answers tangram.Platform/WhoAmI.
type WhoAmIReply struct {
	Name    string `json:"name" msgpack:"name"`
	Admin   bool   `json:"admin" msgpack:"admin"`
	Version string `json:"version" msgpack:"version"`
}

// Empty is a request without fields.
type Empty struct{}

// hostOf is the host part of a peer address, for audit entries.
func hostOf(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// startRPC serves Tangram RPC on Config.RPCAddr. Every method needs an API
// token (bearer, in the authorization metadata) except tangram.Health/*;
// handlers find the caller with auth.FromContext, as HTTP handlers do.
// Components register their RPC services on RPC().
func (s *Server) startRPC() error {
	if s.cfg.RPCAddr == "off" {
		return nil
	}
	m, err := rpcmetrics.New(s.reg)
	if err != nil {
		return err
	}
	authn := rpc.ServerAuth(func(ctx context.Context, token string) (context.Context, error) {
		p, err := s.auth.AuthenticateToken(ctx, token)
		if err != nil {
			if errors.Is(err, auth.ErrUnauthenticated) {
				return nil, rpc.Errorf(rpc.Unauthenticated, "invalid or expired API token")
			}
			return nil, rpc.Errorf(rpc.Unavailable, "checking the token: %v", err)
		}
		return auth.WithPrincipal(ctx, p), nil
	})
	var traced []rpc.ServerInterceptor
	var tracedStreams []rpc.StreamServerInterceptor
	if s.tracingOn() {
		traced = []rpc.ServerInterceptor{rpc.ServerTracing(s.tp)}
		tracedStreams = []rpc.StreamServerInterceptor{rpc.StreamServerTracing(s.tp)}
	}
	srv, err := rpc.NewServer(rpc.Config{
		Logger:   s.log.With("component", "rpc"),
		MaxConns: s.maxConns(),
		Interceptors: append(traced, m.ServerInterceptor(),
			func(ctx context.Context, req any, info *rpc.CallInfo, next rpc.UnaryHandler) (any, error) {
				if strings.HasPrefix(info.Method, "tangram.Health/") {
					return next(ctx, req)
				}
				return authn(audit.WithRemote(ctx, hostOf(info.Peer)), req, info, next)
			}),
		StreamInterceptors: append(tracedStreams, func(ctx context.Context, info *rpc.CallInfo, next func(context.Context) error) error {
			_, err := authn(audit.WithRemote(ctx, hostOf(info.Peer)), nil, info, func(ctx context.Context, _ any) (any, error) { return nil, next(ctx) })
			return err
		}),
	})
	if err != nil {
		return err
	}
	s.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tangram_rpc_bad_connections_total",
			Help: "Platform RPC connections closed for protocol errors (garbage, oversized frames)."}, func() float64 { return float64(srv.BadConns()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tangram_rpc_refused_connections_total",
			Help: "Platform RPC connections refused at the connection limit."}, func() float64 { return float64(srv.RefusedConns()) }))
	if err := rpc.Handle(srv, "tangram.Health/Check", func(ctx context.Context, _ *Empty) (*HealthReply, error) {
		if s.closed.Load() {
			return &HealthReply{Status: "shutting down", Version: Version}, nil
		}
		if err := s.st.Ping(ctx); err != nil {
			return nil, rpc.Errorf(rpc.Unavailable, "store unreachable: %v", err)
		}
		return &HealthReply{Status: "ok", Version: Version}, nil
	}); err != nil {
		return err
	}
	if err := rpc.Handle(srv, "tangram.Platform/WhoAmI", func(ctx context.Context, _ *Empty) (*WhoAmIReply, error) {
		p := auth.FromContext(ctx)
		return &WhoAmIReply{Name: p.Name, Admin: p.IsAdmin(), Version: Version}, nil
	}); err != nil {
		return err
	}
	for _, r := range s.comps {
		if rr, ok := r.comp.(RPCRegistrar); ok {
			if err := rr.RegisterRPC(srv); err != nil {
				return fmt.Errorf("server: %s RPC services: %w", r.name, err)
			}
		}
	}
	if err := s.registerPlatformPrincipal(srv); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.RPCAddr)
	if err != nil {
		return fmt.Errorf("server: rpc listen on %s: %w", s.cfg.RPCAddr, err)
	}
	s.rpc, s.rpcLn = srv, ln
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, rpc.ErrServerClosed) {
			select {
			case s.serveErr <- err:
			default:
			}
		}
	}()
	s.log.Info("rpc listening", "addr", ln.Addr().String())
	return nil
}

// RPC returns the platform's RPC server, for components to register their
// services on; nil when RPCAddr is "off".
func (s *Server) RPC() *rpc.Server { return s.rpc }

// RPCAddr is the RPC listener's address ("" when off).
func (s *Server) RPCAddr() string {
	if s.rpcLn == nil {
		return ""
	}
	return s.rpcLn.Addr().String()
}
