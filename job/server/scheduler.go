package server

import (
	oteltrace "go.opentelemetry.io/otel/trace"

	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tangram-dev/tangram/job"

	"github.com/tangram-dev/tangram/internal/alarm"
	"github.com/tangram-dev/tangram/internal/store"
	"github.com/tangram-dev/tangram/rpc"
)

// Config configures a Scheduler.
type Config struct {
	// Store holds jobs, runs, logs, executors and the partition leases.
	// Every server of a cluster points at the same one. Required.
	Store *store.Store
	// Logger; default slog.Default().
	Logger *slog.Logger
	// NodeName names this server among those sharing the store. Keep it
	// stable across restarts (tangram server keeps one in its data dir):
	// a restarted process of the same node then takes its predecessor's
	// partitions at once, fenced from it by a new term. Default
	// hostname:pid (a restart is then a new node that waits out the TTL).
	NodeName string
	// Partitions splits the jobs; each is leased by one server at a time.
	// Every server sharing a store must use the same number. Default 16.
	Partitions int
	// LeaseTTL is how long a partition stays with a server that stopped
	// renewing it: about the longest a dead server's jobs wait for another
	// server (renewed every third of it, one statement). Default 3 s.
	LeaseTTL time.Duration
	// LoadAhead is how far ahead due jobs are read into the timing wheel,
	// every LoadInterval. Defaults 5 s and 1 s.
	//
	// ClaimAhead is how early a fire is claimed in the store (the job
	// advanced and its run recorded, in one transaction per partition for
	// every fire due in that window); the run is then sent to its executor
	// at its exact time, never before. Claiming ahead takes the store's
	// round trips off the fire's path and lets one transaction serve many
	// fires. Default 100 ms.
	ClaimAhead   time.Duration
	LoadAhead    time.Duration
	LoadInterval time.Duration
	// ExecutorTimeout removes an executor whose heartbeats stopped, and
	// fails its running runs (retried per their job). Default 30 s.
	ExecutorTimeout time.Duration
	// Workers dispatch pending runs concurrently (manual triggers,
	// retries, children, workflow nodes). Fires are claimed by one
	// claimer, in batches. Default 16.
	Workers int
	// RunRetention deletes finished runs and their logs after this long
	// (default 30 days); RunsPerJob keeps at most this many runs of a job
	// (default 1,000). JanitorInterval is how often (default 10 min).
	RunRetention    time.Duration
	RunsPerJob      int
	JanitorInterval time.Duration
	// SMTP sends alarm e-mails (jobs' alarm_email); nil: none are sent.
	SMTP *SMTPConfig
	// MinInterval is the tightest schedule (rate, delay or cron) a
	// non-admin may give a job; an unrestricted admin may go lower.
	// Default 1 s. Each fire is a store transaction: a job every
	// millisecond from any app editor would starve the store.
	MinInterval time.Duration
	// WebhookAllow lets alarm webhooks reach internal addresses (CIDR
	// prefixes, addresses or host names); by default only public
	// addresses are reached.
	WebhookAllow []string
	// DialOptions for the connections to executors.
	DialOptions []rpc.DialOption
	// TracerProvider records a trace per run: the scheduler's span of its
	// dispatch, which the executor's span of the run joins (nil: none).
	TracerProvider oteltrace.TracerProvider
}

// Coalesced counts the fires missed beyond their job's misfire threshold
// that were collapsed into another fire's run or skipped record (its
// Covers counts them).
func (s *Scheduler) Coalesced() int64 { return s.coalesced.Load() }

// DefaultConfig returns the defaults (Store unset; NodeName hostname:pid).
func DefaultConfig() Config {
	h, _ := os.Hostname()
	return Config{Logger: slog.Default(), NodeName: h + ":" + strconv.Itoa(os.Getpid()), Partitions: 16,
		LeaseTTL: 3 * time.Second, LoadAhead: 5 * time.Second, LoadInterval: time.Second, ClaimAhead: 100 * time.Millisecond,
		ExecutorTimeout: 30 * time.Second, Workers: 16, RunRetention: 30 * 24 * time.Hour, RunsPerJob: 1000,
		JanitorInterval: 10 * time.Minute, MinInterval: time.Second}
}

// withDefaults returns c with its zero fields set from DefaultConfig.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.NodeName == "" {
		c.NodeName = d.NodeName
	}
	pos := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	dur := func(p *time.Duration, v time.Duration) {
		if *p <= 0 {
			*p = v
		}
	}
	pos(&c.Partitions, d.Partitions)
	pos(&c.Workers, d.Workers)
	pos(&c.RunsPerJob, d.RunsPerJob)
	dur(&c.LeaseTTL, d.LeaseTTL)
	dur(&c.LoadAhead, d.LoadAhead)
	dur(&c.ClaimAhead, d.ClaimAhead)
	dur(&c.LoadInterval, d.LoadInterval)
	dur(&c.ExecutorTimeout, d.ExecutorTimeout)
	dur(&c.RunRetention, d.RunRetention)
	dur(&c.JanitorInterval, d.JanitorInterval)
	dur(&c.MinInterval, d.MinInterval)
	return c
}

// Validate checks c; it changes nothing (New fills the defaults).
func (c Config) Validate() error {
	if c.Store == nil {
		return errors.New("job: Config.Store is required")
	}
	if c.Partitions > 4096 {
		return fmt.Errorf("job: Config.Partitions %d: at most 4096", c.Partitions)
	}
	if _, err := alarm.NewPolicy(c.WebhookAllow); err != nil {
		return err
	}
	if c.SMTP != nil && c.SMTP.Addr == "" {
		return errors.New("job: Config.SMTP needs an Addr")
	}
	return nil
}

// Scheduler is the trigger side: it stores jobs, fires them on time on the
// server that leases their partition, and dispatches runs to executors.
// Several Schedulers (servers) share one store; each fire is claimed in the
// store under the partition's fencing term, so none fires twice.
type Scheduler struct {
	cfg       Config
	coalesced atomic.Int64 // missed fires collapsed into another's run or record
	metrics   *schedMetrics
	hooks     *alarm.Policy
	log       *slog.Logger
	st        *store.Store
	holder    store.Holder // this process: the node and its incarnation
	wheel     *wheel

	mu       sync.Mutex
	owned    map[int]int64 // partition → lease term
	rr       map[int64]int // round-robin position per job
	uses     map[string]int64
	lastAt   map[string]int64
	conns    map[string]*rpc.Client // executor address → client
	execs    map[string]execCache   // live executors by app, briefly cached
	slowHits map[string][]time.Time // recent timeouts and dispatch failures by executor
	member   int64                  // term of this server's membership lease
	closed   bool
	started  bool

	work   chan any      // pending runs due, for the workers
	claims chan fireItem // fires due for claiming
	alarms *alarm.Sender // from Start
	kick   chan struct{}
	stop   chan struct{}
	wg     sync.WaitGroup
}

// fireItem is a job's scheduled fire in the wheel.
type fireItem struct {
	jobID  int64
	fireAt int64 // unix ms
	part   int
}

// runItem is a pending run (a retry, a manual trigger) due for dispatch.
type runItem struct {
	runID int64
	part  int
}

type runKey int64

// sendItem is a claimed run waiting in the wheel for its fire time.
type sendItem struct {
	j    *job.Job
	a    assigned
	part int
	term int64
}

type sendKey int64 // a run ID

// New returns a scheduler; Start begins its work.
func New(cfg Config) (*Scheduler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	hooks, err := alarm.NewPolicy(cfg.WebhookAllow)
	if err != nil {
		return nil, err
	}
	s := &Scheduler{cfg: cfg, log: cfg.Logger, st: cfg.Store, holder: store.NewHolder(cfg.NodeName), wheel: newWheel(time.Now()), hooks: hooks,
		owned: map[int]int64{}, rr: map[int64]int{}, uses: map[string]int64{}, lastAt: map[string]int64{},
		conns: map[string]*rpc.Client{}, execs: map[string]execCache{}, slowHits: map[string][]time.Time{}, work: make(chan any, 4096), claims: make(chan fireItem, 8192), kick: make(chan struct{}, 1), stop: make(chan struct{})}
	s.metrics = newSchedMetrics(s)
	return s, nil
}

// ErrServerClosed is returned by Start after Close.
var ErrServerClosed = errors.New("job: scheduler closed")

// Start checks that the store answers (within ctx) and begins leasing
// partitions and firing their jobs; that work runs until Shutdown or Close,
// not until ctx ends.
func (s *Scheduler) Start(ctx context.Context) error {
	s.mu.Lock()
	closed, started := s.closed, s.started
	s.started = true
	s.mu.Unlock()
	if closed {
		return ErrServerClosed
	}
	if started {
		return errors.New("job: scheduler already started")
	}
	if err := s.st.Ping(ctx); err != nil {
		return fmt.Errorf("job: store: %w", err)
	}
	s.goFunc(s.leaseLoop)
	s.goFunc(s.loadLoop)
	s.goFunc(s.triggerLoop)
	var err error
	if s.alarms, err = alarm.New(alarm.Config{SMTP: s.cfg.SMTP, Policy: s.hooks, UserAgent: "tangram-job-alarm", Logger: s.log}); err != nil {
		return fmt.Errorf("job: alarms: %w", err)
	}
	s.goFunc(s.janitor)
	for range s.cfg.Workers {
		s.goFunc(s.worker)
	}
	s.goFunc(s.claimer)
	return nil
}

// Close stops the scheduler and gives its partitions up at once (waiting
// at most 2 s for the store).
func (s *Scheduler) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// Shutdown stops firing and dispatching, waits for the loops and workers to
// end, then gives its partitions up in the store so that another server
// takes them at once instead of after LeaseTTL; ctx bounds the release.
// Runs already sent to executors go on there and report to any server.
func (s *Scheduler) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
	if s.alarms != nil {
		s.alarms.Close()
	}
	s.sendClaimed(ctx)
	s.mu.Lock()
	owned := s.owned
	s.owned = map[int]int64{}
	conns := s.conns
	s.conns = map[string]*rpc.Client{}
	s.mu.Unlock()
	for p, term := range owned {
		_ = s.st.ReleaseLease(ctx, partLease(p), s.holder.ID, term)
	}
	_ = s.st.ReleaseLease(ctx, memberLease(s.cfg.NodeName), s.holder.ID, s.member)
	for _, c := range conns {
		c.Close()
	}
	return nil
}

func (s *Scheduler) goFunc(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Node is this server's name.
func (s *Scheduler) Node() string { return s.cfg.NodeName }

// Owned lists the partitions this server holds.
func (s *Scheduler) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, 0, len(s.owned))
	for p := range s.owned {
		out = append(out, p)
	}
	sort.Ints(out)
	return out
}

func ms(t time.Time) int64       { return t.UnixMilli() }
func fromMS(v int64) time.Time   { return time.UnixMilli(v).UTC() }
func (s *Scheduler) wakeLoader() { signal(s.kick) }
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

const jobColumns = `id, body, enabled, next_fire_at, version, created_at, updated_at`

// scanJob reads a row of jobColumns.
func scanJob(row interface{ Scan(...any) error }) (*job.Job, error) {
	var id, next, ver, created, updated int64
	var body string
	var enabled int
	if err := row.Scan(&id, &body, &enabled, &next, &ver, &created, &updated); err != nil {
		return nil, err
	}
	j := &job.Job{}
	if err := json.Unmarshal([]byte(body), j); err != nil {
		return nil, fmt.Errorf("job: job %d: stored body unreadable: %w", id, err)
	}
	j.ID, j.Enabled, j.Version = id, enabled == 1, ver
	j.NextFireAt = time.Time{}
	if next > 0 {
		j.NextFireAt = fromMS(next)
	}
	j.CreatedAt, j.UpdatedAt = fromMS(created), fromMS(updated)
	return j, nil
}

// loadJob reads a job by ID.
func loadJob(ctx context.Context, q store.Querier, id int64) (*job.Job, error) {
	j, err := scanJob(q.QueryRowContext(ctx, `SELECT `+jobColumns+` FROM job_jobs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: job %d", job.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("job: read job %d: %w", id, err)
	}
	return j, nil
}

// loadJobs reads the jobs of ids in one query; a deleted one is absent.
func loadJobs(ctx context.Context, q store.Querier, ids []int64) (map[int64]*job.Job, error) {
	return readJobs(ctx, q, ids, `)`)
}

// loadJobsLocked is loadJobs with the rows locked until tx ends
// (PostgreSQL, MySQL; in id order, as every claim locks them). SQLite's
// transactions already serialise writers.
func loadJobsLocked(ctx context.Context, tx *store.Tx, ids []int64) (map[int64]*job.Job, error) {
	tail := `)`
	if tx.Dialect() != store.SQLite {
		ids = slices.Sorted(slices.Values(ids))
		tail = `) ORDER BY id FOR UPDATE`
	}
	return readJobs(ctx, tx, ids, tail)
}

func readJobs(ctx context.Context, q store.Querier, ids []int64, tail string) (map[int64]*job.Job, error) {
	out := make(map[int64]*job.Job, len(ids))
	err := byIDs(ctx, q, `SELECT `+jobColumns+` FROM job_jobs WHERE id IN (`, tail, ids, func(rows *sql.Rows) error {
		j, err := scanJob(rows)
		if err == nil {
			out[j.ID] = j
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("job: read %d jobs: %w", len(ids), err)
	}
	return out, nil
}

// byIDs runs head + "?, ?, …" + tail for ids, 500 at a time, and calls
// each for every row.
func byIDs(ctx context.Context, q store.Querier, head, tail string, ids []int64, each func(*sql.Rows) error) error {
	for len(ids) > 0 {
		chunk := ids[:min(len(ids), 500)]
		ids = ids[len(chunk):]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := q.QueryContext(ctx, head+"?"+strings.Repeat(", ?", len(chunk)-1)+tail, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := each(rows); err != nil {
				rows.Close()
				return err
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

// janitor applies log and run retention on the partitions this server
// holds: runs (and their logs) finished longer ago than RunRetention, and
// beyond the newest RunsPerJob of each job, are deleted.
func (s *Scheduler) janitor() {
	t := time.NewTicker(s.cfg.JanitorInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.JanitorInterval)
		if n, err := s.sweep(ctx); err != nil {
			s.log.Warn("job: retention sweep failed", "err", err)
		} else if n > 0 {
			s.log.Info("job: retention removed old runs and their logs", "runs", n)
		}
		cancel()
	}
}

// sweep deletes what retention no longer keeps; it returns the runs removed.
func (s *Scheduler) sweep(ctx context.Context) (int, error) {
	parts := s.Owned()
	if len(parts) == 0 {
		return 0, nil
	}
	in := inList(parts)
	var doomed []int64
	cut := ms(time.Now().Add(-s.cfg.RunRetention))
	rows, err := s.st.QueryContext(ctx, `SELECT id FROM job_runs WHERE part IN (`+in+`) AND finished_at > 0 AND finished_at < ? LIMIT 10000`, cut)
	if err != nil {
		return 0, err
	}
	for rows.Next() {
		var id int64
		if rows.Scan(&id) == nil {
			doomed = append(doomed, id)
		}
	}
	rows.Close()
	// Per job, the runs beyond the newest RunsPerJob.
	rows, err = s.st.QueryContext(ctx, `SELECT job_id, COUNT(*) FROM job_runs WHERE part IN (`+in+`) GROUP BY job_id HAVING COUNT(*) > ?`, s.cfg.RunsPerJob)
	if err != nil {
		return 0, err
	}
	var over []int64
	for rows.Next() {
		var id, n int64
		if rows.Scan(&id, &n) == nil {
			over = append(over, id)
		}
	}
	rows.Close()
	for _, jid := range over {
		var edge int64
		err := s.st.QueryRowContext(ctx, `SELECT id FROM job_runs WHERE job_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?`, jid, s.cfg.RunsPerJob).Scan(&edge)
		if err != nil {
			continue
		}
		r, err := s.st.QueryContext(ctx, `SELECT id FROM job_runs WHERE job_id = ? AND id <= ? AND finished_at > 0 LIMIT 10000`, jid, edge)
		if err != nil {
			continue
		}
		for r.Next() {
			var id int64
			if r.Scan(&id) == nil {
				doomed = append(doomed, id)
			}
		}
		r.Close()
	}
	// Executors silent for a day are forgotten (they are out of routing
	// after ExecutorTimeout already).
	if _, err := s.st.ExecContext(ctx, `DELETE FROM job_executors WHERE last_beat < ?`, ms(time.Now().Add(-24*time.Hour))); err != nil {
		return 0, fmt.Errorf("job: retention of executors: %w", err)
	}
	total := len(doomed)
	for len(doomed) > 0 {
		n := min(len(doomed), 500)
		ids := make([]int, 0, n)
		for _, id := range doomed[:n] {
			ids = append(ids, int(id))
		}
		list := inList(ids)
		err := s.st.InTx(ctx, func(tx *store.Tx) error {
			if _, err := tx.ExecContext(ctx, `DELETE FROM job_logs WHERE run_id IN (`+list+`)`); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `DELETE FROM job_runs WHERE id IN (`+list+`)`)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("job: retention: %w", err)
		}
		doomed = doomed[n:]
	}
	return total, nil
}
