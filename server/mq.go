package server

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/mq/broker"
	"github.com/tangram-dev/tangram/mq/names"
	"github.com/tangram-dev/tangram/mq/store"
	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// startNames creates the MQ name service (served on the RPC listener).
func (s *Server) startNames() {
	s.names = names.New(s.cfg.MQNameTTL)
}

// startBroker runs the in-process MQ broker on Config.BrokerAddr, with its
// data in <data>/broker; it registers with this server's name service
// directly and authenticates clients with this server's tokens.
func (s *Server) startBroker() error {
	if s.cfg.BrokerAddr == "off" {
		return nil
	}
	name := s.cfg.BrokerName
	if name == "" {
		host, _ := os.Hostname()
		name = "broker-" + sanitizeName(host)
	}
	b, err := broker.Open(broker.Config{
		Name:       name,
		Dir:        filepath.Join(s.cfg.DataDir, "broker"),
		Store:      store.Config{SegmentSize: s.cfg.BrokerSegmentSize, Flush: s.cfg.BrokerFlush},
		AutoCreate: !s.cfg.BrokerNoAutoCreate,
		Authenticate: func(ctx context.Context, token string) (*auth.Principal, error) {
			return s.auth.AuthenticateToken(ctx, token)
		},
		Register: func(_ context.Context, info wire.BrokerInfo) error { return s.names.Register(info) },
		Logger:   s.log.With("component", "broker"),
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.cfg.BrokerAddr)
	if err != nil {
		b.Close()
		return fmt.Errorf("server: broker listen on %s: %w", s.cfg.BrokerAddr, err)
	}
	if err := b.Serve(ln); err != nil {
		ln.Close()
		b.Close()
		return err
	}
	if err := s.reg.Register(b.Collector()); err != nil {
		s.log.Warn("broker metrics not registered", "err", err)
	}
	s.broker = b
	return nil
}

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
	c, err := mq.NewClient(ctx, mq.Config{Servers: s.RPCAddr(), Token: s.svcToken, Logger: s.log.With("component", "mq-client")})
	if err != nil {
		return nil, err
	}
	s.mqc = c
	return c, nil
}

// PrincipalReply answers tangram.Platform/Principal: the caller's identity
// and bindings, for brokers that authenticate clients with the server.
type PrincipalReply struct {
	Principal auth.Principal `msgpack:"principal"`
}

func (s *Server) registerPlatformPrincipal(srv *rpc.Server) error {
	return rpc.Handle(srv, "tangram.Platform/Principal", func(ctx context.Context, _ *Empty) (*PrincipalReply, error) {
		p := auth.FromContext(ctx)
		if p == nil {
			return nil, rpc.Errorf(rpc.Unauthenticated, "not authenticated")
		}
		return &PrincipalReply{Principal: *p}, nil
	})
}

// Broker is the in-process MQ broker (nil when off).
func (s *Server) Broker() *broker.Broker { return s.broker }

// Names is the MQ name service.
func (s *Server) Names() *names.Table { return s.names }
