// Package greet is the service interface of the RPC example. The client and
// the server registration in greeter_rpc.go are generated from it:
//
//	go run ./cmd/tangram rpc gen examples/rpc/greet
package greet

import "context"

//go:generate go run ../../../cmd/tangram rpc gen .

// Greeter is the service: plain Go, no IDL.
type Greeter interface {
	// SayHello answers with a greeting naming the server that answered.
	SayHello(ctx context.Context, req *HelloRequest) (*HelloReply, error)
	// Audit records a line on the server; nobody waits for an answer.
	Audit(ctx context.Context, req *AuditLine) error
}

// HelloRequest is SayHello's request.
type HelloRequest struct {
	Name string `msgpack:"name"`
}

// HelloReply is SayHello's answer.
type HelloReply struct {
	Message string `msgpack:"message"`
	Server  string `msgpack:"server"`
}

// AuditLine is Audit's request.
type AuditLine struct {
	Text string `msgpack:"text"`
}
