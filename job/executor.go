package job

import (
	oteltrace "go.opentelemetry.io/otel/trace"

	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/backoff"
	"github.com/tangram-dev/tangram/rpc"
)

// Handler runs a job on an executor. Its context ends when the run is
// killed, times out, or is covered by a newer run (block strategy
// cover_early); an error fails the run (and retries it per the job).
type Handler func(ctx context.Context, jc *Context) error

// Context describes the run a Handler executes.
type Context struct {
	RunID      int64
	JobID      int64
	Job        string
	Params     string
	ShardIndex int // sharding_broadcast: this executor's shard
	ShardTotal int
	Attempt    int
	FireAt     time.Time
	// Log writes to the run's log, streamed to the scheduler and viewable
	// live in the console and with `tangram job logs`.
	Log *slog.Logger
	// Output, when set, is passed to the job's children as their params.
	Output string

	buf  *runLog
	glue *glueCode
}

// ExecutorConfig configures an Executor.
type ExecutorConfig struct {
	// Servers are the tangram servers' RPC addresses ("host:port").
	Servers []string
	// Token is an API token with edit permission on App. Without one the
	// executor refuses to start unless Insecure is set: it would accept
	// runs from anyone who can reach it.
	Token string
	// Insecure accepts unsigned run requests (development only).
	Insecure bool
	// App names the executor group jobs are routed to.
	App string
	// ListenAddr is where the scheduler reaches this executor (default
	// "127.0.0.1:0"); AdvertiseAddr is the address it is told (default:
	// the listener's).
	ListenAddr    string
	AdvertiseAddr string
	// Capacity is how many runs may go at once (default 16); further runs
	// are refused so the scheduler tries another executor.
	Capacity int
	// HeartbeatInterval (default 5 s).
	HeartbeatInterval time.Duration
	// ShutdownGrace is how long Close lets running jobs finish before it
	// cancels them and reports them killed (default 10 s).
	ShutdownGrace time.Duration
	Logger        *slog.Logger
	DialOptions   []rpc.DialOption
	// Glue lists the glue types this executor runs ("shell", "python3",
	// "go"); none by default — running code sent by the scheduler is
	// opt-in. GlueDir holds each run's working directory (default
	// <tmp>/tangram-glue); GlueEnv adds variables to a glue's environment;
	// GlueKillGrace is the wait between SIGTERM and SIGKILL (default 5 s).
	Glue          []string
	GlueDir       string
	GlueEnv       []string
	GlueKillGrace time.Duration
	// GoGlue runs glue of type "go"; required when Glue lists it (package
	// job/goglue provides one).
	GoGlue GoInterpreter
	// TracerProvider records a span per run, in the trace the scheduler
	// started for it; the handler's context carries it, so what the
	// handler calls (RPC, SQL, messages) joins the run's trace. Nil: none.
	TracerProvider oteltrace.TracerProvider
}

// Executor runs jobs for the scheduler.
type Executor struct {
	cfg      ExecutorConfig
	log      *slog.Logger
	key      string
	handlers map[string]Handler

	srv  *rpc.Server
	ln   net.Listener
	cli  *rpc.Client
	addr string

	mu      sync.Mutex
	jobs    map[int64]*jobState // by job ID
	runs    map[int64]*execRun  // by run ID
	seen    map[int64]time.Time // run IDs accepted recently (replay guard)
	running int
	closing bool

	outMu sync.Mutex
	out   []outMsg // reports and log chunks, in order, until acknowledged
	outC  chan struct{}

	stop chan struct{}
	wg   sync.WaitGroup
}

type jobState struct {
	cur   *execRun
	queue []*RunRequest
}

type execRun struct {
	req     *RunRequest
	cancel  context.CancelCauseFunc
	release context.CancelFunc // the timeout's timer
	done    chan struct{}
}

type outMsg struct {
	log    *LogRequest
	report *ReportRequest
}

var errCovered = errors.New("covered by a newer run (block strategy cover_early)")
var errKilled = errors.New("killed")

// NewExecutor checks the config; Start registers and begins serving.
func NewExecutor(cfg ExecutorConfig) (*Executor, error) {
	if cfg.Token == "" && !cfg.Insecure {
		return nil, fmt.Errorf("job: executor needs an API token (TANGRAM_TOKEN) to register and to verify run requests; set Insecure to run without one")
	}
	if !validName(cfg.App) {
		return nil, fmt.Errorf("job: executor app %q: 1–128 letters, digits, '.', '_', ':' or '-'", cfg.App)
	}
	if len(cfg.Servers) == 0 {
		return nil, fmt.Errorf("job: executor needs the servers' RPC addresses")
	}
	if cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	if cfg.Capacity <= 0 {
		cfg.Capacity = 16
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 5 * time.Second
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.GlueDir == "" {
		cfg.GlueDir = filepath.Join(os.TempDir(), "tangram-glue")
	}
	if cfg.GlueKillGrace <= 0 {
		cfg.GlueKillGrace = 5 * time.Second
	}
	for _, t := range cfg.Glue {
		if !validGlue(t) {
			return nil, fmt.Errorf("job: executor glue type %q: want shell, python3 or go", t)
		}
		if t == GlueGo && cfg.GoGlue == nil {
			return nil, fmt.Errorf("job: executor glue type go needs ExecutorConfig.GoGlue (goglue.Interpreter{} from package github.com/tangram-dev/tangram/job/goglue)")
		}
	}
	var k [24]byte
	if _, err := rand.Read(k[:]); err != nil {
		return nil, err
	}
	e := &Executor{cfg: cfg, log: cfg.Logger, key: hex.EncodeToString(k[:]), handlers: map[string]Handler{},
		jobs: map[int64]*jobState{}, runs: map[int64]*execRun{}, seen: map[int64]time.Time{},
		outC: make(chan struct{}, 1), stop: make(chan struct{})}
	for _, t := range cfg.Glue {
		e.handlers["glue:"+t] = e.glueHandler(t)
	}
	return e, nil
}

// Handle registers a handler by name (before Start).
func (e *Executor) Handle(name string, h Handler) { e.handlers[name] = h }

// Addr is the address the scheduler reaches this executor at.
func (e *Executor) Addr() string { return e.addr }

// Start listens, registers with the scheduler and keeps heartbeating.
func (e *Executor) Start(ctx context.Context) error {
	srv, err := rpc.NewServer(rpc.Config{Logger: e.log})
	if err != nil {
		return err
	}
	if err := errors.Join(
		rpc.Handle(srv, "tangram.Executor/Run", e.serveRun),
		rpc.Handle(srv, "tangram.Executor/Kill", e.serveKill),
	); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", e.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("job: executor listen %s: %w", e.cfg.ListenAddr, err)
	}
	opts := append([]rpc.DialOption{rpc.WithLogger(e.log)}, e.cfg.DialOptions...)
	if e.cfg.Token != "" {
		opts = append(opts, rpc.WithToken(e.cfg.Token))
	}
	cli, err := rpc.Dial(ctx, strings.Join(e.cfg.Servers, ","), opts...)
	if err != nil {
		ln.Close()
		return fmt.Errorf("job: executor: %w", err)
	}
	e.srv, e.ln, e.cli = srv, ln, cli
	e.addr = ln.Addr().String()
	if e.cfg.AdvertiseAddr != "" {
		e.addr = e.cfg.AdvertiseAddr
	}
	e.wg.Add(3)
	go func() { defer e.wg.Done(); _ = srv.Serve(ln) }()
	go func() { defer e.wg.Done(); e.heartbeatLoop() }()
	go func() { defer e.wg.Done(); e.sendLoop() }()
	if err := e.beat(ctx); err != nil {
		e.log.Warn("job: first executor heartbeat failed; retrying", "err", err)
	}
	return nil
}

func (e *Executor) beat(ctx context.Context) error {
	names := make([]string, 0, len(e.handlers))
	for n := range e.handlers {
		names = append(names, n)
	}
	sort.Strings(names)
	e.mu.Lock()
	// Stamped under the lock that serveRun takes a run under: a run taken
	// before this instant is in the lists below (or, delivered, finished
	// in the store).
	stamp := time.Now().UnixMilli()
	running := e.running
	var runs []int64
	for id := range e.runs {
		runs = append(runs, id)
	}
	for _, js := range e.jobs {
		for _, q := range js.queue {
			runs = append(runs, q.RunID)
		}
	}
	e.mu.Unlock()
	e.outMu.Lock()
	for _, m := range e.out {
		if m.report != nil {
			runs = append(runs, m.report.RunID)
		}
	}
	e.outMu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := rpc.Call[Empty](cctx, e.cli, "tangram.Job/Heartbeat", &BeatRequest{App: e.cfg.App, Addr: e.addr, SignKey: e.key,
		Capacity: e.cfg.Capacity, Running: running, Handlers: names, Runs: runs, Stamp: stamp})
	return err
}

func (e *Executor) heartbeatLoop() {
	t := time.NewTicker(e.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-t.C:
			if err := e.beat(context.Background()); err != nil {
				e.log.Warn("job: executor heartbeat failed", "err", err)
			}
			e.mu.Lock()
			for id, at := range e.seen {
				if time.Since(at) > 10*time.Minute {
					delete(e.seen, id)
				}
			}
			e.mu.Unlock()
		}
	}
}

// verify checks a request's signature and age.
func (e *Executor) verify(stamp int64, sig, canonical string) error {
	if e.cfg.Insecure && e.cfg.Token == "" {
		return nil
	}
	if d := time.Since(time.UnixMilli(stamp)); d > time.Minute || d < -time.Minute {
		return rpc.Errorf(rpc.Unauthenticated, "request stamped %v ago: outside the one-minute window", d.Round(time.Second))
	}
	if !hmac.Equal([]byte(sig), []byte(sign(e.key, canonical))) {
		return rpc.Errorf(rpc.Unauthenticated, "bad request signature")
	}
	return nil
}

func (e *Executor) serveRun(ctx context.Context, req *RunRequest) (*RunReply, error) {
	if err := e.verify(req.Stamp, req.Sig, req.canonical()); err != nil {
		return nil, err
	}
	h := e.handlers[req.Handler]
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := time.Now(); req.Deadline > 0 && now.UnixMilli() > req.Deadline {
		// Checked under e.mu, as beat stamps its list: see BeatRequest.Stamp.
		late := now.Sub(time.UnixMilli(req.Deadline)).Round(time.Millisecond)
		e.log.Warn("job: a run arrived past its dispatch deadline; refused", "run", req.RunID, "late", late)
		return nil, rpc.Errorf(rpc.FailedPrecondition, "run %d arrived %v past its dispatch deadline (assigned more than %v ago, or this host's clock is ahead of the scheduler's)", req.RunID, late, DispatchWindow)
	}
	if _, dup := e.seen[req.RunID]; dup {
		return nil, rpc.Errorf(rpc.AlreadyExists, "run %d was already received (replay)", req.RunID)
	}
	if e.closing {
		return nil, rpc.Errorf(rpc.Unavailable, "executor shutting down")
	}
	e.seen[req.RunID] = time.Now()
	if h == nil {
		e.enqueueLocked(outMsg{report: &ReportRequest{App: e.cfg.App, RunID: req.RunID, Status: StatusFailed,
			Error: fmt.Sprintf("no handler %q on executor %s", req.Handler, e.addr)}})
		return &RunReply{}, nil
	}
	js := e.jobs[req.JobID]
	if js == nil {
		js = &jobState{}
		e.jobs[req.JobID] = js
	}
	if js.cur != nil {
		switch req.Block {
		case BlockDiscard:
			delete(e.seen, req.RunID)
			return &RunReply{Discarded: true}, nil
		case BlockCover:
			js.cur.cancel(errCovered)
			js.queue = append(js.queue[:0], req)
			return &RunReply{}, nil
		default:
			js.queue = append(js.queue, req)
			return &RunReply{}, nil
		}
	}
	if e.running >= e.cfg.Capacity {
		delete(e.seen, req.RunID)
		return nil, rpc.Errorf(rpc.ResourceExhausted, "executor at capacity (%d runs)", e.cfg.Capacity)
	}
	e.startLocked(js, req, h)
	return &RunReply{}, nil
}

// startLocked starts a run (e.mu held).
func (e *Executor) startLocked(js *jobState, req *RunRequest, h Handler) {
	base, cancel := context.WithCancelCause(context.Background())
	ctx, release := base, context.CancelFunc(func() {})
	if req.TimeoutMS > 0 {
		d := time.Duration(req.TimeoutMS) * time.Millisecond
		ctx, release = context.WithTimeoutCause(base, d, fmt.Errorf("timed out after %v", d))
	}
	r := &execRun{req: req, cancel: cancel, release: release, done: make(chan struct{})}
	js.cur = r
	e.runs[req.RunID] = r
	e.running++
	e.wg.Add(1)
	go e.run(ctx, js, r, h)
}

func (e *Executor) run(ctx context.Context, js *jobState, r *execRun, h Handler) {
	defer e.wg.Done()
	req := r.req
	rl := &runLog{e: e, runID: req.RunID}
	jc := &Context{RunID: req.RunID, JobID: req.JobID, Job: req.Job, Params: req.Params, ShardIndex: req.ShardIndex,
		ShardTotal: req.ShardTotal, Attempt: req.Attempt, FireAt: fromMS(req.FireAt), buf: rl,
		glue: glueOf(req),
		Log:  slog.New(slog.NewTextHandler(rl, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, span := e.startRunSpan(ctx, req)
	err := e.call(ctx, h, jc)
	rl.flush()
	rep := &ReportRequest{App: e.cfg.App, RunID: req.RunID, Status: StatusSucceeded, Output: truncate(jc.Output, MaxOutput)}
	if cause := context.Cause(ctx); err != nil || cause != nil {
		rep.Status = StatusFailed
		switch {
		case errors.Is(cause, errKilled), errors.Is(cause, errCovered):
			rep.Status, rep.Error = StatusKilled, cause.Error()
		case cause != nil && ctx.Err() == context.DeadlineExceeded:
			rep.Error = cause.Error()
		case err != nil:
			rep.Error = err.Error()
		default:
			rep.Status = StatusSucceeded // finished before the cancel mattered
		}
	}
	endRunSpan(span, rep)
	close(r.done)
	e.mu.Lock()
	e.enqueueLocked(outMsg{report: rep})
	delete(e.runs, req.RunID)
	e.running--
	js.cur = nil
	if len(js.queue) > 0 && !e.closing {
		next := js.queue[0]
		js.queue = js.queue[1:]
		if h := e.handlers[next.Handler]; h != nil {
			e.startLocked(js, next, h)
		}
	}
	if js.cur == nil && len(js.queue) == 0 {
		delete(e.jobs, req.JobID)
	}
	e.mu.Unlock()
	r.release()
	r.cancel(nil)
}

// call runs h, turning a panic into an error.
func (e *Executor) call(ctx context.Context, h Handler, jc *Context) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("handler panicked: %v", p)
		}
	}()
	return h(ctx, jc)
}

func (e *Executor) serveKill(ctx context.Context, req *KillRequest) (*Empty, error) {
	if err := e.verify(req.Stamp, req.Sig, req.canonical()); err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if r := e.runs[req.RunID]; r != nil {
		r.cancel(errKilled)
		return &Empty{}, nil
	}
	// Queued behind a running one (serial)?
	for _, js := range e.jobs {
		for i, q := range js.queue {
			if q.RunID == req.RunID {
				js.queue = append(js.queue[:i], js.queue[i+1:]...)
				e.enqueueLocked(outMsg{report: &ReportRequest{App: e.cfg.App, RunID: req.RunID, Status: StatusKilled, Error: "killed while queued"}})
				return &Empty{}, nil
			}
		}
	}
	return nil, rpc.Errorf(rpc.NotFound, "run %d is not on this executor", req.RunID)
}

func (e *Executor) enqueueLocked(m outMsg) {
	e.outMu.Lock()
	e.out = append(e.out, m)
	e.outMu.Unlock()
	signal(e.outC)
}

// sendLoop delivers reports and log chunks in order, many per call,
// retrying until a server acknowledges them, so no run stays "running"
// after it ended here.
func (e *Executor) sendLoop() {
	bo := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		e.outMu.Lock()
		n := min(len(e.out), MaxDeliver)
		req := &DeliverRequest{App: e.cfg.App}
		for _, m := range e.out[:n] {
			if m.report != nil {
				req.Reports = append(req.Reports, *m.report)
			} else {
				req.Logs = append(req.Logs, *m.log)
			}
		}
		e.outMu.Unlock()
		if n == 0 {
			select {
			case <-e.outC:
				continue
			case <-e.stop:
				return
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := rpc.Call[Empty](ctx, e.cli, "tangram.Job/Deliver", req)
		cancel()
		code := rpc.CodeOf(err)
		if err != nil && code != rpc.InvalidArgument && code != rpc.PermissionDenied {
			e.log.Warn("job: delivering run reports failed; retrying", "err", err, "backoff", bo.Current())
			if !bo.Sleep(e.stop) {
				return
			}
			continue
		}
		if err != nil {
			e.log.Error("job: the scheduler refused run reports; dropped", "items", n, "err", err)
		}
		bo.Reset()
		e.outMu.Lock()
		clear(e.out[:n])
		e.out = e.out[n:]
		e.outMu.Unlock()
	}
}

// pending reports how many reports and log chunks await acknowledgement.
func (e *Executor) pending() int {
	e.outMu.Lock()
	defer e.outMu.Unlock()
	return len(e.out)
}

// Close stops taking runs, lets running ones finish for ShutdownGrace,
// cancels the rest (reported killed), delivers the reports, deregisters and
// stops.
func (e *Executor) Close() error {
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return nil
	}
	e.closing = true
	var runs []*execRun
	for _, r := range e.runs {
		runs = append(runs, r)
	}
	for _, js := range e.jobs {
		for _, q := range js.queue {
			e.enqueueLocked(outMsg{report: &ReportRequest{App: e.cfg.App, RunID: q.RunID, Status: StatusKilled, Error: "executor shut down before the run started"}})
		}
		js.queue = nil
	}
	e.mu.Unlock()
	deadline := time.After(e.cfg.ShutdownGrace)
	for _, r := range runs {
		select {
		case <-r.done:
		case <-deadline:
			r.cancel(fmt.Errorf("%w: executor shut down", errKilled))
			<-r.done
		}
	}
	// Deliver what is left, for a bounded time.
	end := time.Now().Add(5 * time.Second)
	for e.pending() > 0 && time.Now().Before(end) && e.cli != nil {
		time.Sleep(20 * time.Millisecond)
	}
	if e.cli != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, _ = rpc.Call[Empty](ctx, e.cli, "tangram.Job/Leave", &LeaveRequest{App: e.cfg.App, Addr: e.addr})
		cancel()
	}
	close(e.stop)
	if e.srv != nil {
		_ = e.srv.Close()
	}
	e.wg.Wait()
	if e.cli != nil {
		e.cli.Close()
	}
	return nil
}

// runLog buffers a run's log lines and ships them in chunks.
type runLog struct {
	e     *Executor
	runID int64
	mu    sync.Mutex
	buf   bytes.Buffer
	seq   int
	last  time.Time
}

func (l *runLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf.Write(p)
	ship := l.buf.Len() >= 16<<10 || time.Since(l.last) > 300*time.Millisecond
	l.mu.Unlock()
	if ship {
		l.flush()
	}
	return len(p), nil
}

func (l *runLog) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = time.Now()
	for l.buf.Len() > 0 {
		chunk := l.buf.Next(MaxLogChunk)
		l.e.enqueueLocked(outMsg{log: &LogRequest{App: l.e.cfg.App, RunID: l.runID, Seq: l.seq, Text: string(chunk)}})
		l.seq++
	}
}

func glueOf(req *RunRequest) *glueCode {
	if req.GlueType == "" {
		return nil
	}
	return &glueCode{typ: req.GlueType, version: req.GlueVersion, source: req.GlueSource}
}

func fromMS(v int64) time.Time { return time.UnixMilli(v).UTC() }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// signal wakes a loop waiting on ch without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
