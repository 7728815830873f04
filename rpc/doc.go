// Package rpc is Tangram RPC: a multiplexed binary RPC framework: "call a
// remote function like a local one".
//
// A Server dispatches calls by "Service/Method" to typed handlers (Handle,
// HandleStream) or to methods found by reflection (Server.Register). A Client
// keeps a pool of multiplexed connections per endpoint, balances calls over
// the healthy endpoints a Resolver supplies (package balance), retries what
// is safe to retry within a budget, hedges slow idempotent calls, and drops
// a reply that arrives after its call gave up. Calls are synchronous (Call),
// asynchronous (Go, CallFunc) or oneway; streams (NewStream) are
// flow-controlled in both directions. Interceptors add tracing
// (OpenTelemetry, W3C traceparent), Prometheus metrics, logging and auth.
//
// The wire format is specified byte by byte in docs/rpc.md; `tangram rpc gen`
// (package gen) writes a typed client implementing a Go interface.
package rpc
