package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

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
	return rpc.Handle(srv, auth.MethodPrincipal, func(ctx context.Context, _ *Empty) (*auth.PrincipalReply, error) {
		p := auth.FromContext(ctx)
		if p == nil {
			return nil, rpc.Errorf(rpc.Unauthenticated, "not authenticated")
		}
		return &auth.PrincipalReply{Principal: *p}, nil
	})
}

// Broker is the in-process MQ broker (nil when not running).
func (s *Server) Broker() *broker.Broker { return s.broker }

// Names is the MQ name service (nil when not running).
func (s *Server) Names() *names.Table { return s.names }
