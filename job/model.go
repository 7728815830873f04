package job

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/internal/ident"

	"github.com/robfig/cron/v3"
)

// Errors.
var (
	ErrInvalid  = errcode.New(errcode.BadRequest, "job: invalid")
	ErrNotFound = errcode.New(errcode.NotFound, "job: not found")
)

// Trigger kinds.
const (
	TriggerCron   = "cron"   // a cron expression with seconds, in a time zone
	TriggerRate   = "rate"   // every Every, counted from the previous fire time
	TriggerDelay  = "delay"  // Every after the previous run finished
	TriggerOnce   = "once"   // once, at At
	TriggerManual = "manual" // only by API, console or CLI
)

// Misfire policies: what a server does with a fire time found more than
// MisfireThreshold in the past (the whole cluster was down, the store was
// unreachable). A fire late by less than the threshold (a server died and
// another took its jobs over) runs, late, whatever the policy: each one,
// none skipped.
const (
	MisfireFireOnce = "fire_once" // one run now stands for every missed fire, then on schedule (default)
	MisfireSkip     = "skip"      // the missed fires are recorded as one skipped run; next one on schedule
)

// Routing strategies: which executor of the app runs a trigger.
const (
	RouteFirst      = "first"
	RouteLast       = "last"
	RouteRoundRobin = "round_robin"
	RouteRandom     = "random"
	RouteHash       = "consistent_hash" // by job: one job keeps its executor
	RouteLFU        = "least_frequently_used"
	RouteLRU        = "least_recently_used"
	RouteFailover   = "failover" // first healthy (by heartbeat), in address order
	RouteBusyover   = "busyover" // first idle one
	RouteBroadcast  = "sharding_broadcast"
)

// Block strategies: what a new trigger does while the job's previous run
// is still running on that executor.
const (
	BlockSerial  = "serial"        // queue behind it
	BlockDiscard = "discard_later" // drop the new run (it fails as discarded)
	BlockCover   = "cover_early"   // kill the running one, start the new
)

// Duration is a time.Duration written as "1m30s" in JSON.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "1m30s" or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration: want a string like \"30s\"")
		}
		*d = Duration(n)
		return nil
	}
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Trigger says when a job fires.
type Trigger struct {
	Kind string `json:"kind"`
	// Cron has six fields (seconds first) or five (seconds = 0), or a
	// descriptor such as "@every 5s" or "@daily".
	Cron string `json:"cron,omitempty"`
	// TimeZone is an IANA name for Cron ("Asia/Shanghai"); default UTC.
	TimeZone string `json:"time_zone,omitempty"`
	// Every is the period of rate and delay triggers.
	Every Duration `json:"every,omitempty"`
	// At is the time of a once trigger.
	At time.Time `json:"at,omitzero"`
}

// Job is a scheduled job.
type Job struct {
	ID      int64   `json:"id"`
	Name    string  `json:"name"`
	App     string  `json:"app"`     // the executor group that runs it
	Handler string  `json:"handler"` // the handler's name in the executor
	Params  string  `json:"params,omitempty"`
	Trigger Trigger `json:"trigger"`
	// StartAt and EndAt bound the schedule (zero: unbounded).
	StartAt time.Time `json:"start_at,omitzero"`
	EndAt   time.Time `json:"end_at,omitzero"`
	// Misfire policy and threshold (default fire_once, 60 s).
	Misfire          string   `json:"misfire,omitempty"`
	MisfireThreshold Duration `json:"misfire_threshold,omitempty"`
	Route            string   `json:"route,omitempty"` // default round_robin
	Block            string   `json:"block,omitempty"` // default serial
	// MaxConcurrency caps the job's running runs across all executors (0:
	// no cap); a trigger beyond it follows Block: serial waits, discard_later
	// is discarded, cover_early kills the oldest running run.
	MaxConcurrency int `json:"max_concurrency,omitempty"`
	// Retries after a failure, waiting RetryBackoff, doubled each time.
	Retries      int      `json:"retries,omitempty"`
	RetryBackoff Duration `json:"retry_backoff,omitempty"`
	// Timeout kills a run that takes longer (0: none).
	Timeout Duration `json:"timeout,omitempty"`
	// Children are triggered when a run of this job succeeds.
	Children []int64 `json:"children,omitempty"`
	// Flow makes this a DAG workflow of other jobs (handler "flow").
	Flow *Flow `json:"flow,omitempty"`
	// AlarmWebhook receives a JSON POST (an Alarm) when a run fails for
	// good, times out or is killed.
	AlarmWebhook string `json:"alarm_webhook,omitempty"`
	// AlarmEmail lists addresses mailed the same alarm (needs the server's
	// SMTP settings: --smtp-addr, --smtp-from).
	AlarmEmail []string `json:"alarm_email,omitempty"`
	Enabled    bool     `json:"enabled"`
	// Set by the scheduler.
	NextFireAt time.Time `json:"next_fire_at,omitzero"`
	Version    int64     `json:"version,omitempty"`
	CreatedAt  time.Time `json:"created_at,omitzero"`
	UpdatedAt  time.Time `json:"updated_at,omitzero"`
}

// validName reports whether s may name a job, an app or a handler: 1-128
// letters, digits, '.', '_', ':' or '-', starting with a letter or digit.
func validName(s string) bool { return ident.Name(s, 128, "._:-") }

// Limits.
const (
	MaxParamsBytes = 64 << 10
	MaxRetries     = 100
	MaxChildren    = 64
)

// cronParser takes six fields with seconds, five without, and descriptors.
var cronParser = cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Normalize applies defaults and validates the job, naming the field at
// fault.
func (j *Job) Normalize() error {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w %s: %s", ErrInvalid, field, fmt.Sprintf(format, a...))
	}
	if !validName(j.Name) {
		return bad("name", "%q: 1–128 letters, digits, '.', '_', ':' or '-'", j.Name)
	}
	if !validName(j.App) {
		return bad("app", "%q: 1–128 letters, digits, '.', '_', ':' or '-'", j.App)
	}
	if j.Flow != nil && j.Handler == "" {
		j.Handler = FlowHandler
	}
	if (j.Flow != nil) != (j.Handler == FlowHandler) {
		return bad("flow", "a flow job has handler %q and flow nodes; other jobs have neither", FlowHandler)
	}
	if j.Flow != nil {
		if err := j.Flow.validate(j.ID); err != nil {
			return err
		}
	}
	if !validName(j.Handler) {
		return bad("handler", "%q: 1–128 letters, digits, '.', '_', ':' or '-'", j.Handler)
	}
	if t := GlueType(j.Handler); t != "" && !validGlue(t) {
		return bad("handler", "%q: glue types are glue:shell, glue:python3 and glue:go", j.Handler)
	}
	if len(j.Params) > MaxParamsBytes {
		return bad("params", "%d bytes, at most %d", len(j.Params), MaxParamsBytes)
	}
	if j.Trigger.Kind == "" {
		j.Trigger.Kind = TriggerCron
	}
	if _, err := j.Trigger.schedule(); err != nil {
		return err
	}
	if !j.EndAt.IsZero() && !j.StartAt.IsZero() && !j.EndAt.After(j.StartAt) {
		return bad("end_at", "%s is not after start_at %s", j.EndAt.Format(time.RFC3339), j.StartAt.Format(time.RFC3339))
	}
	if j.Misfire == "" {
		j.Misfire = MisfireFireOnce
	}
	if j.Misfire != MisfireSkip && j.Misfire != MisfireFireOnce {
		return bad("misfire", "%q: want skip or fire_once", j.Misfire)
	}
	if j.MisfireThreshold == 0 {
		j.MisfireThreshold = Duration(time.Minute)
	}
	if j.MisfireThreshold < 0 {
		return bad("misfire_threshold", "negative")
	}
	if j.Route == "" {
		j.Route = RouteRoundRobin
	}
	switch j.Route {
	case RouteFirst, RouteLast, RouteRoundRobin, RouteRandom, RouteHash, RouteLFU, RouteLRU, RouteFailover, RouteBusyover, RouteBroadcast:
	default:
		return bad("route", "%q: want one of first, last, round_robin, random, consistent_hash, least_frequently_used, least_recently_used, failover, busyover, sharding_broadcast", j.Route)
	}
	if j.Block == "" {
		j.Block = BlockSerial
	}
	switch j.Block {
	case BlockSerial, BlockDiscard, BlockCover:
	default:
		return bad("block", "%q: want serial, discard_later or cover_early", j.Block)
	}
	if j.MaxConcurrency < 0 || j.MaxConcurrency > 10000 {
		return bad("max_concurrency", "%d: want 0 (no cap) to 10000", j.MaxConcurrency)
	}
	if j.Retries < 0 || j.Retries > MaxRetries {
		return bad("retries", "%d: want 0–%d", j.Retries, MaxRetries)
	}
	if j.RetryBackoff < 0 || j.Timeout < 0 {
		return bad("retry_backoff/timeout", "negative")
	}
	if j.Retries > 0 && j.RetryBackoff == 0 {
		j.RetryBackoff = Duration(time.Second)
	}
	if err := validWebhook(j.AlarmWebhook); err != nil {
		return err
	}
	if err := validEmails(j.AlarmEmail); err != nil {
		return err
	}
	if len(j.Children) > MaxChildren {
		return bad("children", "%d, at most %d", len(j.Children), MaxChildren)
	}
	for _, c := range j.Children {
		if c == j.ID && j.ID != 0 {
			return bad("children", "a job cannot be its own child")
		}
	}
	return nil
}

// schedule parses the trigger.
func (t *Trigger) schedule() (schedule, error) {
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("%w trigger.%s: %s", ErrInvalid, field, fmt.Sprintf(format, a...))
	}
	switch t.Kind {
	case TriggerCron:
		if strings.TrimSpace(t.Cron) == "" {
			return nil, bad("cron", "empty")
		}
		loc := time.UTC
		if t.TimeZone != "" {
			l, err := time.LoadLocation(t.TimeZone)
			if err != nil {
				return nil, bad("time_zone", "%q: %v", t.TimeZone, err)
			}
			loc = l
		}
		if strings.HasPrefix(t.Cron, "TZ=") || strings.HasPrefix(t.Cron, "CRON_TZ=") {
			return nil, bad("cron", "%q: give the zone in time_zone", t.Cron)
		}
		if d, ok := strings.CutPrefix(strings.TrimSpace(t.Cron), "@every "); ok {
			// The cron library takes any duration here and fires a
			// non-positive or sub-second one every second.
			v, err := time.ParseDuration(strings.TrimSpace(d))
			if err != nil || v < time.Second || v%time.Second != 0 {
				return nil, bad("cron", "%q: @every needs a whole number of seconds, at least 1s (for shorter periods use a rate trigger)", t.Cron)
			}
		}
		s, err := cronParser.Parse(t.Cron)
		if err != nil {
			return nil, bad("cron", "%q: %v", t.Cron, err)
		}
		cs := cronSchedule{s: s, loc: loc}
		if cs.next(time.Now()).IsZero() {
			return nil, bad("cron", "%q never fires (no such date within five years, e.g. 30 February)", t.Cron)
		}
		return cs, nil
	case TriggerRate, TriggerDelay:
		if t.Every < Duration(time.Millisecond) {
			return nil, bad("every", "%v: want at least 1ms", t.Every.D())
		}
		return periodSchedule(t.Every.D()), nil
	case TriggerOnce:
		if t.At.IsZero() {
			return nil, bad("at", "missing")
		}
		return onceSchedule(t.At), nil
	case TriggerManual:
		return manualSchedule{}, nil
	}
	return nil, bad("kind", "%q: want cron, rate, delay, once or manual", t.Kind)
}

// Interval is the shortest time between two fires of the trigger, judged
// over its next fires from now (0 for once and manual triggers). Servers
// refuse schedules tighter than their minimum from non-admins.
func (t *Trigger) Interval(now time.Time) time.Duration {
	s, err := t.schedule()
	if err != nil {
		return 0
	}
	switch t.Kind {
	case TriggerRate, TriggerDelay:
		return t.Every.D()
	case TriggerCron:
		var least time.Duration
		prev := s.next(now)
		for i := 0; i < 16 && !prev.IsZero(); i++ {
			n := s.next(prev)
			if n.IsZero() {
				break
			}
			if d := n.Sub(prev); least == 0 || d < least {
				least = d
			}
			prev = n
		}
		return least
	}
	return 0
}

// schedule computes fire times.
type schedule interface {
	// next returns the first fire time strictly after t (zero: none).
	next(t time.Time) time.Time
}

type cronSchedule struct {
	s   cron.Schedule
	loc *time.Location
}

func (c cronSchedule) next(t time.Time) time.Time {
	n := c.s.Next(t.In(c.loc))
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

type periodSchedule time.Duration

func (p periodSchedule) next(t time.Time) time.Time { return t.Add(time.Duration(p)) }

type onceSchedule time.Time

func (o onceSchedule) next(t time.Time) time.Time {
	if time.Time(o).After(t) {
		return time.Time(o)
	}
	return time.Time{}
}

type manualSchedule struct{}

func (manualSchedule) next(time.Time) time.Time { return time.Time{} }

// FirstFire is the first fire time of a job created or changed at now.
func (j *Job) FirstFire(now time.Time) time.Time {
	s, err := j.Trigger.schedule()
	if err != nil || !j.Enabled {
		return time.Time{}
	}
	from := now
	if j.StartAt.After(from) {
		from = j.StartAt.Add(-time.Millisecond)
	}
	var t time.Time
	switch {
	case j.Trigger.Kind == TriggerOnce:
		t = j.Trigger.At // in the past: a misfire, handled by policy
	case (j.Trigger.Kind == TriggerRate || j.Trigger.Kind == TriggerDelay) && j.StartAt.After(now):
		t = j.StartAt // a period counted from its start
	default:
		t = s.next(from)
	}
	return j.bound(t)
}

// NextFire is the fire time after one at prev.
func (j *Job) NextFire(prev time.Time) time.Time {
	s, err := j.Trigger.schedule()
	if err != nil || j.Trigger.Kind == TriggerOnce || j.Trigger.Kind == TriggerDelay {
		return time.Time{} // delay: set when the run finishes
	}
	return j.bound(s.next(prev))
}

func (j *Job) bound(t time.Time) time.Time {
	if !t.IsZero() && !j.EndAt.IsZero() && t.After(j.EndAt) {
		return time.Time{}
	}
	return t
}
