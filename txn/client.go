package txn

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/rpc"
)

// Config configures a Client of the coordinator (the txn component of
// tangram server).
type Config struct {
	// Servers are tangram server RPC addresses (required).
	Servers []string
	// Token is an API token with edit permission on App.
	Token string
	// App owns the transactions this client starts (for permissions and
	// lists).
	App string
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// DialOptions are passed to rpc.Dial.
	DialOptions []rpc.DialOption
	// HTTPClient calls the Try of TCC and XA branches at http(s) targets
	// (default: a client with a 10 s timeout).
	HTTPClient *http.Client
	// Resolve finds a registry service's instances for Try targets
	// rpc://SERVICE/… (registry.Client.Resolver does; nil: rpc targets
	// must name a host:port).
	Resolve func(namespace, group, service string) (rpc.Resolver, error)
	// BranchDialOptions are used to dial RPC participants.
	BranchDialOptions []rpc.DialOption
}

// Client starts and inspects global transactions. Safe for concurrent
// use.
type Client struct {
	cfg    Config
	rpc    *rpc.Client
	caller *Caller
}

// Dial connects to the coordinator.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("txn: Config.Servers is empty")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	opts := append([]rpc.DialOption{rpc.WithLogger(cfg.Logger)}, cfg.DialOptions...)
	if cfg.Token != "" {
		opts = append(opts, rpc.WithToken(cfg.Token))
	}
	cl, err := rpc.Dial(ctx, strings.Join(cfg.Servers, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("txn: dial: %w", err)
	}
	return &Client{cfg: cfg, rpc: cl, caller: &Caller{HTTP: cfg.HTTPClient, Resolve: cfg.Resolve, DialOptions: cfg.BranchDialOptions}}, nil
}

// Close closes the connections (the coordinator's, and participants'
// over RPC).
func (c *Client) Close() error {
	c.caller.Close()
	return c.rpc.Close()
}

// Get returns a transaction with its branches and timeline.
func (c *Client) Get(ctx context.Context, xid string) (Global, error) {
	g, err := rpc.Call[Global](ctx, c.rpc, MethodGet, &XIDRequest{XID: xid})
	if err != nil {
		return Global{}, fmt.Errorf("txn: get %s: %w", xid, err)
	}
	return *g, nil
}

// List returns a page of transactions, newest first.
func (c *Client) List(ctx context.Context, req ListRequest) (ListReply, error) {
	r, err := rpc.Call[ListReply](ctx, c.rpc, MethodList, &req)
	if err != nil {
		return ListReply{}, fmt.Errorf("txn: list: %w", err)
	}
	return *r, nil
}

// Retry resumes a transaction parked as failed (or makes a pending retry
// due now); with wait it returns when phase two has ended.
func (c *Client) Retry(ctx context.Context, xid string, wait bool) (Global, error) {
	g, err := rpc.Call[Global](ctx, c.rpc, MethodRetry, &XIDRequest{XID: xid, Wait: wait, WaitMs: waitMs(ctx)})
	if err != nil {
		return Global{}, fmt.Errorf("txn: retry %s: %w", xid, err)
	}
	return *g, nil
}

// Abort rolls a transaction back (a prepared one, or a saga parked as
// failed).
func (c *Client) Abort(ctx context.Context, xid, reason string, wait bool) (Global, error) {
	g, err := rpc.Call[Global](ctx, c.rpc, MethodAbort, &XIDRequest{XID: xid, Reason: reason, Wait: wait, WaitMs: waitMs(ctx)})
	if err != nil {
		return Global{}, fmt.Errorf("txn: abort %s: %w", xid, err)
	}
	return *g, nil
}

// waitMs is how long the server may wait for phase two: a little less
// than ctx allows, so its answer arrives in time.
func waitMs(ctx context.Context) int64 {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	return max(int64(time.Until(dl)/time.Millisecond)-50, 1)
}

func payload(p any) ([]byte, error) {
	switch v := p.(type) {
	case nil:
		return nil, nil
	case []byte:
		return v, nil
	case json.RawMessage:
		return v, nil
	case string:
		return []byte(v), nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("txn: payload: %w", err)
	}
	return b, nil
}

// Saga is a saga being described: steps of an action and its
// compensation, run in order (or at once with Concurrent, ordered by
// After). Submit hands it to the coordinator.
type Saga struct {
	c     *Client
	xid   string
	steps []Step
	opts  Options
	err   error
}

// NewSaga starts describing a saga with the given options.
func (c *Client) NewSaga(opts Options) *Saga { return &Saga{c: c, opts: opts} }

// XID sets the transaction's ID (default: the server draws one).
func (s *Saga) XID(xid string) *Saga { s.xid = xid; return s }

// Add appends a step: action and compensate are URLs the coordinator
// POSTs payload (JSON-encoded unless []byte or string) to.
func (s *Saga) Add(action, compensate string, p any) *Saga {
	b, err := payload(p)
	if err != nil && s.err == nil {
		s.err = err
	}
	s.steps = append(s.steps, Step{Action: action, Compensate: compensate, Payload: b})
	return s
}

// After makes step i wait for the steps deps (in a concurrent saga).
func (s *Saga) After(i int, deps ...int) *Saga {
	if i < 0 || i >= len(s.steps) {
		if s.err == nil {
			s.err = fmt.Errorf("%w: saga: After(%d): no such step", ErrBadRequest, i)
		}
		return s
	}
	s.steps[i].After = append(s.steps[i].After, deps...)
	s.opts.Concurrent = true
	return s
}

// Submit hands the saga to the coordinator, which runs it. With wait it
// returns when the saga has committed or been compensated (or ctx's
// deadline is near): check Global.Status.
func (s *Saga) Submit(ctx context.Context, wait bool) (Global, error) {
	if s.err != nil {
		return Global{}, s.err
	}
	g, err := rpc.Call[Global](ctx, s.c.rpc, MethodSubmit, &SubmitRequest{XID: s.xid, Mode: ModeSaga, App: s.c.cfg.App,
		Steps: s.steps, Options: s.opts, Wait: wait, WaitMs: waitMs(ctx)})
	if err != nil {
		return Global{}, fmt.Errorf("txn: submit saga: %w", err)
	}
	return *g, nil
}

// Txn is a TCC or XA transaction in progress: Branch (TCC) or XABranch
// registers a branch and calls its Try.
type Txn struct {
	c    *Client
	xid  string
	mode Mode
}

// XID is the transaction's ID.
func (t *Txn) XID() string { return t.xid }

// TCC runs fn inside a new TCC transaction. fn calls t.Branch for each
// participant; when fn returns nil the transaction is submitted (every
// branch confirmed), when it returns an error it is aborted (every
// registered branch cancelled) and that error is returned. With wait the
// call returns when phase two has ended.
func (c *Client) TCC(ctx context.Context, opts Options, wait bool, fn func(ctx context.Context, t *Txn) error) (Global, error) {
	return c.run(ctx, ModeTCC, opts, wait, fn)
}

// XA runs fn inside a new XA transaction: fn calls t.XABranch for each
// participant, whose Try runs its statements in an XA branch of its
// database and prepares it. When fn returns nil every branch is committed,
// else every registered branch is rolled back and fn's error returned.
// With wait, a committed status means every branch committed.
func (c *Client) XA(ctx context.Context, opts Options, wait bool, fn func(ctx context.Context, t *Txn) error) (Global, error) {
	return c.run(ctx, ModeXA, opts, wait, fn)
}

// AT runs fn inside a new AT transaction. fn's context carries the XID
// (txn.XIDFrom): local transactions of databases opened through txn/at
// with it join the transaction, and so do services fn calls over Tangram
// RPC (the XID rides the call's metadata) or over HTTP (txn.SetHeader,
// txn.Middleware). Each such local transaction commits at once, holding
// global row locks; when fn returns nil the transaction commits (the rows
// are freed, the undo images deleted), else every branch's undo images
// are applied and fn's error returned.
func (c *Client) AT(ctx context.Context, opts Options, wait bool, fn func(ctx context.Context, t *Txn) error) (Global, error) {
	return c.run(ctx, ModeAT, opts, wait, fn)
}

// Register adds a branch to a prepared transaction (what Txn.Branch and
// an AT database do). An AT registration whose rows are held by another
// transaction registers nothing and returns the conflict.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (RegisterReply, error) {
	r, err := rpc.Call[RegisterReply](ctx, c.rpc, MethodRegister, &req)
	if err != nil {
		return RegisterReply{}, fmt.Errorf("txn: register branch of %s: %w", req.XID, err)
	}
	return *r, nil
}

// Locks returns the first of req.Keys that a transaction other than
// req.XID holds (nil conflict: all free).
func (c *Client) Locks(ctx context.Context, req LocksRequest) (LocksReply, error) {
	r, err := rpc.Call[LocksReply](ctx, c.rpc, MethodLocks, &req)
	if err != nil {
		return LocksReply{}, fmt.Errorf("txn: check row locks: %w", err)
	}
	return *r, nil
}

func (c *Client) run(ctx context.Context, mode Mode, opts Options, wait bool, fn func(ctx context.Context, t *Txn) error) (Global, error) {
	g, err := rpc.Call[Global](ctx, c.rpc, MethodBegin, &BeginRequest{Mode: mode, App: c.cfg.App, Options: opts})
	if err != nil {
		return Global{}, fmt.Errorf("txn: begin: %w", err)
	}
	t := &Txn{c: c, xid: g.XID, mode: mode}
	if ferr := fn(WithXID(ctx, g.XID), t); ferr != nil {
		actx := context.WithoutCancel(ctx)
		if _, err := c.Abort(actx, g.XID, ferr.Error(), false); err != nil {
			// The coordinator aborts it at its timeout anyway.
			c.cfg.Logger.Warn("txn: abort after a failed try", "xid", g.XID, "err", err)
		}
		return Global{XID: g.XID, Mode: mode, Status: StatusAborting, Reason: ferr.Error()}, ferr
	}
	out, err := rpc.Call[Global](ctx, c.rpc, MethodSubmit, &SubmitRequest{XID: g.XID, Mode: mode, Wait: wait, WaitMs: waitMs(ctx)})
	if err != nil {
		return Global{}, fmt.Errorf("txn: submit %s: %w", g.XID, err)
	}
	return *out, nil
}

// Branch registers a branch (its Confirm and Cancel URLs) and calls its
// Try at try with payload. A Try answering 409 is a business failure
// (ErrFailure); any error makes the caller's fn return it, so the
// transaction is cancelled.
func (t *Txn) Branch(ctx context.Context, try, confirm, cancel string, p any) error {
	if t.mode != ModeTCC {
		return fmt.Errorf("%w: Branch is for a TCC transaction; use XABranch", ErrBadRequest)
	}
	return t.branch(ctx, try, confirm, cancel, p)
}

// XABranch registers an XA branch served at url (one endpoint for the
// Try, the commit and the rollback: XA.Serve) and calls its Try, which
// prepares it.
func (t *Txn) XABranch(ctx context.Context, url string, p any) error {
	if t.mode != ModeXA {
		return fmt.Errorf("%w: XABranch is for an XA transaction; use Branch", ErrBadRequest)
	}
	return t.branch(ctx, url, url, url, p)
}

func (t *Txn) branch(ctx context.Context, try, confirm, cancel string, p any) error {
	if err := ValidTarget(try); err != nil {
		return err
	}
	b, err := payload(p)
	if err != nil {
		return err
	}
	r, err := t.c.Register(ctx, RegisterRequest{XID: t.xid, Step: Step{Confirm: confirm, Cancel: cancel, Payload: b}})
	if err != nil {
		return err
	}
	bi := BranchInfo{XID: t.xid, Branch: strconv.Itoa(r.Branch), Op: OpTry, Mode: t.mode}
	if err := t.c.caller.Call(ctx, try, bi, b); err != nil {
		if errors.Is(err, ErrFailure) {
			return fmt.Errorf("%w: try branch %d of %s: %s", ErrFailure, r.Branch, t.xid, errcode.Message(err))
		}
		return fmt.Errorf("txn: try branch %d of %s: %w", r.Branch, t.xid, err)
	}
	return nil
}
