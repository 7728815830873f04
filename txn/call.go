package txn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/rpc"
)

// ErrOperator: the participant cannot go on without an operator (AT: a
// row changed behind the transaction's back), so retrying is pointless;
// the coordinator parks the transaction at once. Over HTTP it is status
// 422, over RPC status FailedPrecondition.
var ErrOperator = errors.New("txn: the participant needs an operator")

// BranchRequest is a branch call over Tangram RPC: the step's payload
// (the branch itself rides the call's metadata, as HTTP headers).
type BranchRequest struct {
	Payload []byte `json:"payload,omitempty" msgpack:"payload"`
}

// Target is a parsed branch target: an http(s) URL, or rpc://HOST/METHOD
// where HOST is a service name in the registry (default namespace and
// group, or ?namespace=&group=) or a host:port, and METHOD a Tangram RPC
// method ("bank.Accounts/Debit").
type Target struct {
	URL       string // http(s)
	Host      string // rpc: a service name or host:port
	Namespace string // rpc: the service's registry namespace ("" default)
	Group     string // rpc: its group ("" default)
	Method    string // rpc
}

// RPC reports whether t is an RPC target.
func (t Target) RPC() bool { return t.Method != "" }

// Direct reports whether an RPC target names an address (host:port)
// rather than a registry service.
func (t Target) Direct() bool {
	_, port, err := net.SplitHostPort(t.Host)
	if err != nil {
		return false
	}
	_, err = strconv.ParseUint(port, 10, 16)
	return err == nil
}

// ParseTarget parses a branch target.
func ParseTarget(s string) (Target, error) {
	u, err := url.Parse(s)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" {
		return Target{URL: s}, nil
	}
	if err == nil && u.Scheme == "rpc" && u.Host != "" {
		m := strings.TrimPrefix(u.Path, "/")
		svc, name, ok := strings.Cut(m, "/")
		if ok && svc != "" && name != "" && !strings.Contains(name, "/") {
			q := u.Query()
			return Target{Host: u.Host, Namespace: q.Get("namespace"), Group: q.Get("group"), Method: m}, nil
		}
	}
	return Target{}, fmt.Errorf("%w: target %q: want an http:// or https:// URL, or rpc://SERVICE-OR-HOST:PORT/Service/Method", ErrBadRequest, s)
}

// ValidTarget checks a branch target.
func ValidTarget(t string) error {
	_, err := ParseTarget(t)
	return err
}

// Caller calls branch operations at their targets, over HTTP (a POST of
// the payload with the branch headers) or Tangram RPC (BranchRequest
// with the branch in the metadata), and sorts the answers: nil for
// success; an error wrapping ErrFailure for a business failure (HTTP 409,
// RPC Aborted) — final for a Try or an action; ErrOperator (422,
// FailedPrecondition); any other error is worth a retry. The trace context
// of ctx travels with the call. The zero Caller calls HTTP targets with
// http.DefaultClient and RPC targets by address only.
type Caller struct {
	HTTP *http.Client
	// Resolve finds the instances of a registry service for rpc:// targets
	// naming one (nil: only host:port targets).
	Resolve func(namespace, group, service string) (rpc.Resolver, error)
	// DialOptions for RPC participants (a token, timeouts).
	DialOptions []rpc.DialOption
	// Allow, when set, refuses targets outside it (Allow.Check) and
	// dials direct RPC targets through Allow.DialContext; the HTTP client
	// must dial through it too (tangram server sets both up).
	Allow *Allow

	mu      sync.Mutex
	clients map[string]*rpc.Client
	closed  bool
}

// Call runs bi's operation at target with payload.
func (c *Caller) Call(ctx context.Context, target string, bi BranchInfo, payload []byte) error {
	t, err := ParseTarget(target)
	if err != nil {
		return err
	}
	if err := c.Allow.Check(t); err != nil {
		return err
	}
	if t.RPC() {
		return c.callRPC(ctx, t, bi, payload)
	}
	return c.callHTTP(ctx, t.URL, bi, payload)
}

func (c *Caller) callHTTP(ctx context.Context, target string, bi BranchInfo, payload []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(payload))
	if err != nil {
		return err
	}
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(req.Header))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderXID, bi.XID)
	req.Header.Set(HeaderBranch, bi.Branch)
	req.Header.Set(HeaderOp, string(bi.Op))
	req.Header.Set(HeaderMode, string(bi.Mode))
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	text := strings.TrimSpace(string(msg))
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode == http.StatusConflict:
		return fmt.Errorf("%w: %s", ErrFailure, text)
	case resp.StatusCode == http.StatusUnprocessableEntity:
		return fmt.Errorf("%w: %s", ErrOperator, text)
	}
	return fmt.Errorf("HTTP %d: %s", resp.StatusCode, text)
}

func (c *Caller) callRPC(ctx context.Context, t Target, bi BranchInfo, payload []byte) error {
	cl, err := c.client(ctx, t)
	if err != nil {
		return err
	}
	ctx = rpc.WithOutgoing(ctx, HeaderXID, bi.XID, HeaderBranch, bi.Branch, HeaderOp, string(bi.Op), HeaderMode, string(bi.Mode))
	_, err = rpc.Call[Empty](ctx, cl, t.Method, &BranchRequest{Payload: payload})
	switch rpc.CodeOf(err) {
	case rpc.OK:
		return nil
	case rpc.Aborted:
		return fmt.Errorf("%w: %s", ErrFailure, rpcMessage(err))
	case rpc.FailedPrecondition:
		return fmt.Errorf("%w: %s", ErrOperator, rpcMessage(err))
	}
	return err
}

func rpcMessage(err error) string {
	var e *rpc.Error
	if errors.As(err, &e) {
		return e.Message
	}
	return err.Error()
}

// client returns the RPC client of a target's host, dialled once.
func (c *Caller) client(ctx context.Context, t Target) (*rpc.Client, error) {
	key := t.Host + "?" + t.Namespace + "&" + t.Group
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("txn: caller closed")
	}
	if cl := c.clients[key]; cl != nil {
		return cl, nil
	}
	opts := append([]rpc.DialOption(nil), c.DialOptions...)
	if c.Allow != nil && t.Direct() {
		dial := c.Allow.DialContext(&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second})
		opts = append(opts, rpc.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) { return dial(ctx, "tcp", addr) }))
	}
	if !t.Direct() {
		if c.Resolve == nil {
			return nil, fmt.Errorf("txn: rpc://%s/%s: no registry to find service %q in; name a host:port", t.Host, t.Method, t.Host)
		}
		r, err := c.Resolve(t.Namespace, t.Group, t.Host)
		if err != nil {
			return nil, fmt.Errorf("txn: service %s: %w", t.Host, err)
		}
		opts = append(opts, rpc.WithResolver(r))
	}
	// Holding the lock while dialling keeps one client per host; Dial
	// waits only for the resolver's first list.
	cl, err := rpc.Dial(ctx, t.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("txn: dial %s: %w", t.Host, err)
	}
	if c.clients == nil {
		c.clients = map[string]*rpc.Client{}
	}
	c.clients[key] = cl
	return cl, nil
}

// Close closes the RPC clients.
func (c *Caller) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, cl := range c.clients {
		cl.Close()
	}
	c.clients = nil
	return nil
}

// BranchFromContext reads the branch of an RPC branch call from its
// metadata.
func BranchFromContext(ctx context.Context) (BranchInfo, error) {
	md := rpc.Incoming(ctx)
	return branchInfo("branch call: metadata", md[HeaderXID], md[HeaderBranch], md[HeaderOp], md[HeaderMode])
}

// HandleBranch serves branch operations as the RPC method name on s (a
// participant over Tangram RPC: targets rpc://SERVICE/name). fn gets the
// branch and the payload and returns as an HTTP participant would: nil,
// ErrFailure or ErrSuspended (a business failure: status Aborted),
// ErrOperator (FailedPrecondition), ErrBadRequest (InvalidArgument), or
// anything else (retried).
func HandleBranch(s *rpc.Server, name string, fn func(ctx context.Context, bi BranchInfo, payload []byte) error) error {
	return rpc.Handle(s, name, func(ctx context.Context, req *BranchRequest) (*Empty, error) {
		bi, err := BranchFromContext(ctx)
		if err == nil {
			err = fn(ctx, bi, req.Payload)
		}
		switch {
		case err == nil:
			return &Empty{}, nil
		case errors.Is(err, ErrFailure) || errors.Is(err, ErrSuspended):
			return nil, rpc.Errorf(rpc.Aborted, "%s", errcode.Message(err))
		case errors.Is(err, ErrOperator):
			return nil, rpc.Errorf(rpc.FailedPrecondition, "%s", err.Error())
		case errors.Is(err, ErrBadRequest):
			return nil, rpc.Errorf(rpc.InvalidArgument, "%s", err.Error())
		}
		return nil, rpc.Errorf(rpc.Unavailable, "%s", err.Error())
	})
}
