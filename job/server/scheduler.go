package server

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/job"

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
	// NodeName names this server among those sharing the store (the
	// holder of partition leases). Default hostname:pid.
	NodeName string
	// Partitions splits the jobs; each is leased by one server at a time.
	// Every server sharing a store must use the same number. Default 16.
	Partitions int
	// LeaseTTL is how long a partition stays with a server that stopped
	// renewing it: the longest a dead server's jobs wait. Default 10 s.
	LeaseTTL time.Duration
	// LoadAhead is how far ahead due jobs are read into the timing wheel,
	// every LoadInterval. Defaults 5 s and 1 s.
	LoadAhead    time.Duration
	LoadInterval time.Duration
	// ExecutorTimeout removes an executor whose heartbeats stopped, and
	// fails its running runs (retried per their job). Default 30 s.
	ExecutorTimeout time.Duration
	// Workers fire and dispatch due triggers concurrently. Default 16.
	Workers int
	// RunRetention deletes finished runs and their logs after this long
	// (default 30 days); RunsPerJob keeps at most this many runs of a job
	// (default 1,000). JanitorInterval is how often (default 10 min).
	RunRetention    time.Duration
	RunsPerJob      int
	JanitorInterval time.Duration
	// SMTP sends alarm e-mails (jobs' alarm_email); nil: none are sent.
	SMTP *SMTPConfig
	// DialOptions for the connections to executors.
	DialOptions []rpc.DialOption
}

// DefaultConfig returns the defaults (Store unset; NodeName hostname:pid).
func DefaultConfig() Config {
	h, _ := os.Hostname()
	return Config{Logger: slog.Default(), NodeName: h + ":" + strconv.Itoa(os.Getpid()), Partitions: 16,
		LeaseTTL: 10 * time.Second, LoadAhead: 5 * time.Second, LoadInterval: time.Second,
		ExecutorTimeout: 30 * time.Second, Workers: 16, RunRetention: 30 * 24 * time.Hour, RunsPerJob: 1000,
		JanitorInterval: 10 * time.Minute}
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
	dur(&c.LoadInterval, d.LoadInterval)
	dur(&c.ExecutorTimeout, d.ExecutorTimeout)
	dur(&c.RunRetention, d.RunRetention)
	dur(&c.JanitorInterval, d.JanitorInterval)
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
	cfg   Config
	log   *slog.Logger
	st    *store.Store
	wheel *wheel

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

	work   chan any
	alarms chan alarmItem
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

// New returns a scheduler; Start begins its work.
func New(cfg Config) (*Scheduler, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Scheduler{cfg: cfg, log: cfg.Logger, st: cfg.Store, wheel: newWheel(time.Now()),
		owned: map[int]int64{}, rr: map[int64]int{}, uses: map[string]int64{}, lastAt: map[string]int64{},
		conns: map[string]*rpc.Client{}, execs: map[string]execCache{}, slowHits: map[string][]time.Time{}, work: make(chan any, 4096), alarms: make(chan alarmItem, 1024), kick: make(chan struct{}, 1), stop: make(chan struct{})}, nil
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
	s.goFunc(s.alarmLoop)
	s.goFunc(s.janitor)
	for range s.cfg.Workers {
		s.goFunc(s.worker)
	}
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
	s.mu.Lock()
	owned := s.owned
	s.owned = map[int]int64{}
	conns := s.conns
	s.conns = map[string]*rpc.Client{}
	s.mu.Unlock()
	for p, term := range owned {
		_ = s.st.ReleaseLease(ctx, partLease(p), s.cfg.NodeName, term)
	}
	_ = s.st.ReleaseLease(ctx, memberLease(s.cfg.NodeName), s.cfg.NodeName, s.member)
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

func partLease(p int) string      { return "job/p/" + strconv.Itoa(p) }
func memberLease(n string) string { return "job/m/" + n }
func partOf(id int64, n int) int  { return int(uint64(id) % uint64(n)) }
func ms(t time.Time) int64        { return t.UnixMilli() }
func fromMS(v int64) time.Time    { return time.UnixMilli(v).UTC() }
func (s *Scheduler) wakeLoader()  { signal(s.kick) }
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// leaseLoop keeps this server's membership and its fair share of the
// partitions: ceil(partitions / live servers). A server joining takes free
// partitions; one holding too many gives the excess up, so a cluster of N
// servers splits the work N ways.
func (s *Scheduler) leaseLoop() {
	every := s.cfg.LeaseTTL / 3
	for {
		s.balance()
		select {
		case <-s.stop:
			return
		case <-time.After(every):
		}
	}
}

func (s *Scheduler) balance() {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LeaseTTL/2)
	defer cancel()
	ml, _, err := s.st.AcquireLease(ctx, memberLease(s.cfg.NodeName), s.cfg.NodeName, s.cfg.LeaseTTL)
	if err != nil {
		s.log.Warn("job: renewing membership failed", "err", err)
		return
	}
	s.mu.Lock()
	s.member = ml.Term
	s.mu.Unlock()
	now := time.Now()
	members, err := s.st.Leases(ctx, "job/m/")
	if err != nil {
		s.log.Warn("job: listing servers failed", "err", err)
		return
	}
	live := 0
	for _, m := range members {
		if m.ExpiresAt.After(now) {
			live++
		}
	}
	fair := (s.cfg.Partitions + max(live, 1) - 1) / max(live, 1)
	// Renew what we hold.
	s.mu.Lock()
	owned := make(map[int]int64, len(s.owned))
	for p, t := range s.owned {
		owned[p] = t
	}
	s.mu.Unlock()
	for p, term := range owned {
		if err := s.st.RenewLease(ctx, partLease(p), s.cfg.NodeName, term, s.cfg.LeaseTTL); err != nil {
			s.log.Warn("job: lost a partition", "partition", p, "err", err)
			s.drop(p)
			delete(owned, p)
		}
	}
	// Give up the excess, highest partitions first.
	if len(owned) > fair {
		ps := make([]int, 0, len(owned))
		for p := range owned {
			ps = append(ps, p)
		}
		sort.Sort(sort.Reverse(sort.IntSlice(ps)))
		for _, p := range ps[:len(owned)-fair] {
			s.drop(p)
			_ = s.st.ReleaseLease(ctx, partLease(p), s.cfg.NodeName, owned[p])
			delete(owned, p)
			s.log.Info("job: gave a partition up to rebalance", "partition", p, "servers", live)
		}
		return
	}
	if len(owned) >= fair {
		return
	}
	leases, err := s.st.Leases(ctx, "job/p/")
	if err != nil {
		return
	}
	held := map[int]bool{}
	for _, l := range leases {
		p, err := strconv.Atoi(strings.TrimPrefix(l.Name, "job/p/"))
		if err == nil && l.ExpiresAt.After(now) && l.Holder != s.cfg.NodeName {
			held[p] = true
		}
	}
	start := rand.IntN(s.cfg.Partitions)
	for i := range s.cfg.Partitions {
		if len(owned) >= fair {
			break
		}
		p := (start + i) % s.cfg.Partitions
		if _, ok := owned[p]; ok || held[p] {
			continue
		}
		l, ok, err := s.st.AcquireLease(ctx, partLease(p), s.cfg.NodeName, s.cfg.LeaseTTL)
		if err != nil || !ok {
			continue
		}
		owned[p] = l.Term
		s.mu.Lock()
		s.owned[p] = l.Term
		s.mu.Unlock()
		s.log.Info("job: took a partition", "partition", p, "term", l.Term)
		s.wakeLoader()
	}
}

// drop forgets a partition (its timers fire nowhere: fire checks the
// lease, and the new holder loads the jobs).
func (s *Scheduler) drop(p int) {
	s.mu.Lock()
	delete(s.owned, p)
	s.mu.Unlock()
}

func (s *Scheduler) term(p int) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.owned[p]
	return t, ok
}

// loadLoop reads the jobs and pending runs of the owned partitions that are
// due within LoadAhead into the wheel, and fails runs whose executor is gone.
func (s *Scheduler) loadLoop() {
	t := time.NewTicker(s.cfg.LoadInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		case <-s.kick:
		}
		s.load()
	}
}

func (s *Scheduler) load() {
	parts := s.Owned()
	if len(parts) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LoadInterval*5)
	defer cancel()
	in := inList(parts)
	horizon := ms(time.Now().Add(s.cfg.LoadAhead))
	fires, err := triples(ctx, s.st, `SELECT id, part, next_fire_at FROM job_jobs WHERE enabled = 1 AND next_fire_at > 0 AND next_fire_at <= ? AND part IN (`+in+`)`, horizon)
	if err != nil {
		s.log.Warn("job: loading due jobs failed", "err", err)
		return
	}
	for _, f := range fires {
		if at, ok := s.wheel.has(f[0]); ok && ms(at) == f[2] {
			continue
		}
		s.wheel.add(f[0], fromMS(f[2]), fireItem{jobID: f[0], part: int(f[1]), fireAt: f[2]})
	}
	runs, err := triples(ctx, s.st, `SELECT id, part, due_at FROM job_runs WHERE status = 'pending' AND due_at <= ? AND part IN (`+in+`)`, horizon)
	if err != nil {
		s.log.Warn("job: loading pending runs failed", "err", err)
		return
	}
	for _, r := range runs {
		if _, ok := s.wheel.has(runKey(r[0])); !ok {
			s.wheel.add(runKey(r[0]), fromMS(r[2]), runItem{runID: r[0], part: int(r[1])})
		}
	}
	s.reapLost(ctx, in)
}

// triples runs a query of three integer columns (id, partition, time).
func triples(ctx context.Context, q store.Querier, query string, args ...any) ([][3]int64, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][3]int64
	for rows.Next() {
		var t [3]int64
		if err := rows.Scan(&t[0], &t[1], &t[2]); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func inList(ps []int) string {
	var b strings.Builder
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(p))
	}
	return b.String()
}

// triggerLoop sleeps until the wheel's next due time and hands what is due
// to the workers.
func (s *Scheduler) triggerLoop() {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for _, v := range s.wheel.advance(time.Now()) {
			select {
			case s.work <- v:
			case <-s.stop:
				return
			}
		}
		d := time.Hour
		if at, ok := s.wheel.nextDue(); ok {
			d = max(time.Until(at), 0)
		}
		timer.Reset(d)
		select {
		case <-s.stop:
			return
		case <-timer.C:
		case <-s.wheel.changed:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
	}
}

// worker takes what is due; under load it takes up to maxBatch items at
// once and claims the fires of one partition in one transaction (one commit
// for many fires).
func (s *Scheduler) worker() {
	const maxBatch = 256
	for {
		var first any
		select {
		case <-s.stop:
			return
		case first = <-s.work:
		}
		batch := []any{first}
	drain:
		for len(batch) < maxBatch {
			select {
			case v := <-s.work:
				batch = append(batch, v)
			default:
				break drain
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		fires := map[int][]fireItem{}
		for _, v := range batch {
			switch it := v.(type) {
			case fireItem:
				fires[it.part] = append(fires[it.part], it)
			case runItem:
				s.dispatchPending(ctx, it)
			}
		}
		for part, items := range fires {
			s.fireBatch(ctx, part, items)
		}
		cancel()
	}
}

// errFenced means this server no longer holds the partition.
var errFenced = errors.New("job: partition lease lost")

// fenceTx checks, inside tx, that this server still holds partition p under
// term. On PostgreSQL and MySQL it locks the lease row (FOR UPDATE), so a
// takeover waits for tx to end; SQLite has one writer, and a transaction
// whose snapshot went stale fails on its first write.
func (s *Scheduler) fenceTx(ctx context.Context, tx *store.Tx, p int, term int64) error {
	q := `SELECT holder, term, expires_at FROM leases WHERE name = ?`
	if tx.Dialect() != store.SQLite {
		q += ` FOR UPDATE`
	}
	var holder string
	var t, exp int64
	if err := tx.QueryRowContext(ctx, q, partLease(p)).Scan(&holder, &t, &exp); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return errFenced
		}
		return fmt.Errorf("job: fence: %w", err)
	}
	if holder != s.cfg.NodeName || t != term || exp < ms(time.Now()) {
		return errFenced
	}
	return nil
}

// fireBatch claims scheduled fires of one partition in the store — each
// job's next_fire_at moves on from exactly its fire time, under the
// partition's term, in the same transaction that inserts the runs, already
// assigned to an executor by the job's route — and then sends them.
func (s *Scheduler) fireBatch(ctx context.Context, part int, items []fireItem) {
	term, ok := s.term(part)
	if !ok {
		return
	}
	now := time.Now()
	type claim struct {
		j    *job.Job
		runs []assigned
	}
	var claims []claim
	var flowRuns []int64
	var retry []fireItem
	err := s.st.InTx(ctx, func(tx *store.Tx) error {
		claims, flowRuns, retry = claims[:0], flowRuns[:0], retry[:0]
		if err := s.fenceTx(ctx, tx, part, term); err != nil {
			return err
		}
		for _, f := range items {
			j, err := loadJob(ctx, tx, f.jobID)
			if errors.Is(err, job.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if !j.Enabled || ms(j.NextFireAt) != f.fireAt {
				continue // changed, or fired already
			}
			fireAt := fromMS(f.fireAt)
			next := j.NextFire(fireAt)
			cause := "schedule"
			if late := now.Sub(fireAt); late > j.MisfireThreshold.D() {
				// Missed (the cluster was down, a partition changed hands late).
				for !next.IsZero() && next.Before(now) {
					next = j.NextFire(next)
				}
				if j.Misfire == job.MisfireSkip {
					s.log.Warn("job: missed fire skipped", "job", j.Name, "fire_at", fireAt, "late", late.Round(time.Millisecond))
					if err := s.advanceJob(ctx, tx, j, f.fireAt, next); err != nil && !errors.Is(err, errStale) {
						return err
					}
					continue
				}
				cause = "misfire"
			}
			if err := s.advanceJob(ctx, tx, j, f.fireAt, next); err != nil {
				if errors.Is(err, errStale) {
					continue
				}
				return err
			}
			if j.Flow != nil {
				ids, err := s.startFlow(ctx, tx, j, f.fireAt, cause, now)
				if err != nil {
					return err
				}
				flowRuns = append(flowRuns, ids...)
			} else {
				runs, err := s.insertAssigned(ctx, tx, j, f.fireAt, cause, term, now)
				if err != nil {
					return err
				}
				claims = append(claims, claim{j, runs})
			}
			if nf := j.NextFireAt; !nf.IsZero() && nf.Before(now.Add(s.cfg.LoadAhead)) {
				retry = append(retry, fireItem{jobID: j.ID, fireAt: ms(nf), part: part})
			}
		}
		return nil
	})
	switch {
	case errors.Is(err, errFenced):
		return
	case err != nil:
		s.log.Error("job: claiming fires failed; they will be retried", "fires", len(items), "err", err)
		for _, f := range items {
			s.wheel.add(f.jobID, time.Now().Add(time.Second), f) // the store may be down
		}
		return
	}
	for _, f := range retry {
		s.wheel.add(f.jobID, fromMS(f.fireAt), f)
	}
	s.queueRuns(ctx, flowRuns)
	var sends []*sending
	for _, c := range claims {
		for _, a := range c.runs {
			if a.ex == nil {
				s.dispatch(ctx, c.j, a.id, part, term) // no executor chosen: the slow path fails or routes it
				continue
			}
			sends = append(sends, s.sendAsync(ctx, c.j, a, part, term))
		}
	}
	for _, sd := range sends {
		s.sent(ctx, sd)
	}
}

// assigned is a run inserted by fireBatch, running on ex (nil: pending).
type assigned struct {
	id     int64
	fireAt int64
	shard  int
	total  int
	ex     *job.ExecutorInfo
}

// insertAssigned inserts the runs of one fire already assigned to the
// executor the job's route picks (one per executor for a broadcast).
func (s *Scheduler) insertAssigned(ctx context.Context, tx *store.Tx, j *job.Job, fireAt int64, cause string, term int64, now time.Time) ([]assigned, error) {
	ex, err := s.cachedExecutors(ctx, j.App, j.Handler)
	if err != nil {
		return nil, err
	}
	gate, err := s.gate(ctx, tx, j)
	if err != nil {
		return nil, err
	}
	total := 1
	if j.Route == job.RouteBroadcast {
		total = max(len(ex), 1)
	}
	out := make([]assigned, 0, total)
	for i := range total {
		a := assigned{fireAt: fireAt, shard: i, total: total}
		status, addr, started := job.StatusPending, "", int64(0)
		if gate != gateOpen {
			// Over max_concurrency: pending, for dispatch (which applies the
			// block strategy) rather than straight to an executor.
		} else if job.GlueType(j.Handler) == "" {
			if cands := s.route(j, i, ex); len(cands) > 0 {
				e := cands[0]
				a.ex, status, addr, started = &e, job.StatusRunning, e.Addr, ms(now)
			}
		}
		a.id, err = tx.InsertID(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node)
			VALUES (?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, 0, '', 0, '')`,
			j.ID, partOf(j.ID, s.cfg.Partitions), fireAt, i, total, cause, j.Params, status, ms(now), addr, term, ms(now), started)
		if err != nil {
			return nil, fmt.Errorf("job: insert run of %s: %w", j.Name, err)
		}
		out = append(out, a)
	}
	return out, nil
}

var errStale = errors.New("job: fire already claimed or job changed")

// advanceJob moves the job's next fire from exactly prev to next (zero:
// none); zero rows means another holder already did — a double fire avoided.
func (s *Scheduler) advanceJob(ctx context.Context, tx *store.Tx, j *job.Job, prev int64, next time.Time) error {
	nv := int64(0)
	if !next.IsZero() {
		nv = ms(next)
	}
	res, err := tx.ExecContext(ctx, `UPDATE job_jobs SET next_fire_at = ? WHERE id = ? AND next_fire_at = ?`, nv, j.ID, prev)
	if err != nil {
		return fmt.Errorf("job: advance %s: %w", j.Name, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errStale
	}
	j.NextFireAt = time.Time{}
	if nv > 0 {
		j.NextFireAt = fromMS(nv)
	}
	return nil
}

// insertRuns adds the pending run(s) of one fire: one per executor for a
// sharding broadcast, else one.
func (s *Scheduler) insertRuns(ctx context.Context, tx *store.Tx, j *job.Job, fireAt int64, attempt int, cause, params string, term int64, now time.Time, fl flowRef) ([]int64, error) {
	total := 1
	if j.Route == job.RouteBroadcast {
		ex, err := s.executors(ctx, j.App, j.Handler)
		if err != nil {
			return nil, err
		}
		total = max(len(ex), 1)
	}
	ids := make([]int64, 0, total)
	for i := range total {
		id, err := tx.InsertID(ctx, `INSERT INTO job_runs (job_id, part, fire_at, attempt, shard_index, shard_total, cause, params, status, due_at, executor, term, error, created_at, started_at, finished_at, output, flow_id, node)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, '', ?, '', ?, 0, 0, '', ?, ?)`,
			j.ID, partOf(j.ID, s.cfg.Partitions), fireAt, attempt, i, total, cause, params, ms(now), term, ms(now), fl.id, fl.node)
		if err != nil {
			if store.IsUniqueViolation(err) {
				return nil, errStale
			}
			return nil, fmt.Errorf("job: insert run of %s: %w", j.Name, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// loadJob reads a job by ID.
func loadJob(ctx context.Context, q store.Querier, id int64) (*job.Job, error) {
	var body string
	var next, ver, created, updated int64
	var enabled int
	err := q.QueryRowContext(ctx, `SELECT body, enabled, next_fire_at, version, created_at, updated_at FROM job_jobs WHERE id = ?`, id).
		Scan(&body, &enabled, &next, &ver, &created, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: job %d", job.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("job: read job %d: %w", id, err)
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

// hashOf is the consistent-hash position of a string.
func hashOf(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
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
