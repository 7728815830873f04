// Package greet is gen's golden input.
package greet

import (
	"context"
	tt "time"
)

// Greeter is a service.
type Greeter interface {
	SayHello(ctx context.Context, req *HelloRequest) (*HelloReply, error)
	Log(ctx context.Context, req *LogLine) error
	When(ctx context.Context, req *HelloRequest) (*tt.Time, error)
}

// NotRPC is skipped when scanning all interfaces.
type NotRPC interface{ String() string }

type HelloRequest struct{ Name string }
type HelloReply struct{ Message string }
type LogLine struct{ Text string }
