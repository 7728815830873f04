package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/mq/broker"
	"github.com/tangram-dev/tangram/mq/names"
	"github.com/tangram-dev/tangram/rpc"
)

func sanitizeName(h string) string {
	var sb strings.Builder
	for _, c := range h {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			sb.WriteRune(c)
		}
	}
	if sb.Len() == 0 {
		return "local"
	}
	return sb.String()
}

// serviceToken derives the platform's own token from the secret key, so
// every server of a cluster has the same one.
func serviceToken(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("tangram platform service token v1"))
	return auth.TokenPrefix + "svc_" + hex.EncodeToString(m.Sum(nil))
}

// mqClient is the platform's own MQ client (the console's view of topics,
// groups and brokers), made on first use.
func (s *Server) mqClient(ctx context.Context) (*mq.Client, error) {
	s.mqMu.Lock()
	defer s.mqMu.Unlock()
	if s.mqc != nil {
		return s.mqc, nil
	}
	if s.RPCAddr() == "" {
		return nil, fmt.Errorf("server: the MQ console needs the RPC listener")
	}
	c, err := mq.NewClient(ctx, mq.Config{Servers: []string{s.RPCAddr()}, Token: s.svcToken, Logger: s.log.With("component", "mq-client")})
	if err != nil {
		return nil, err
	}
	s.mqc = c
	return c, nil
}

func (s *Server) registerPlatformPrincipal(srv *rpc.Server) error {
	return errors.Join(
		rpc.Handle(srv, auth.MethodPrincipal, func(ctx context.Context, _ *Empty) (*auth.PrincipalReply, error) {
			p := auth.FromContext(ctx)
			if p == nil {
				return nil, rpc.Errorf(rpc.Unauthenticated, "not authenticated")
			}
			return &auth.PrincipalReply{Principal: *p}, nil
		}),
		// Brokers running apart record their administrative changes here.
		rpc.Handle(srv, auth.MethodAudit, func(ctx context.Context, req *auth.AuditRequest) (*Empty, error) {
			if err := auth.Check(ctx, auth.PermBroker, "", "", ""); err != nil {
				return nil, err
			}
			if req.Action == "" || len(req.Action) > 128 || len(req.Resource) > 512 || len(req.After) > 64<<10 || !strings.HasPrefix(req.Action, "mq.") {
				return nil, rpc.Errorf(rpc.InvalidArgument, "audit: an mq.* action of at most 128 bytes, a resource of at most 512 and a value of at most 64 KiB")
			}
			broker := "broker"
			if p := auth.FromContext(ctx); p != nil {
				broker = p.Name
			}
			req.Remote = strings.TrimSpace(req.Remote + " via " + broker)
			return &Empty{}, s.recordBrokerAudit(ctx, *req)
		}),
	)
}

// recordBrokerAudit writes a broker's administrative change to the audit
// log.
func (s *Server) recordBrokerAudit(ctx context.Context, e auth.AuditRequest) error {
	return audit.Record(ctx, s.st, audit.Entry{Actor: e.Actor, Action: e.Action, Resource: e.Resource, After: e.After, Remote: e.Remote})
}

// Broker is the in-process MQ broker (nil when not running).
func (s *Server) Broker() *broker.Broker { return s.broker }

// KVAddr is the Redis-protocol store's address ("" when it does not run).
func (s *Server) KVAddr() string {
	if s.kv == nil {
		return ""
	}
	return s.kv.Addr()
}

// Names is the MQ name service (nil when not running).
func (s *Server) Names() *names.Table { return s.names }

// OTLPAddr is the trace collector's OTLP/HTTP address ("" when it
// receives none).
func (s *Server) OTLPAddr() string {
	if s.traces == nil {
		return ""
	}
	return s.traces.OTLPAddr()
}
