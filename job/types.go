package job

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/mail"
	"net/url"
	"strings"
	"time"
)

// Run is one execution of a job (one shard of one attempt of one fire).
type Run struct {
	ID         int64     `json:"id"`
	JobID      int64     `json:"job_id"`
	FireAt     time.Time `json:"fire_at"`
	Attempt    int       `json:"attempt"`
	ShardIndex int       `json:"shard_index"`
	ShardTotal int       `json:"shard_total"`
	Cause      string    `json:"cause"` // schedule, misfire, manual, retry, child
	// Covers is how many scheduled fires the run stands for: 1, or more
	// when fires missed beyond the job's misfire threshold were collapsed
	// into it (fire_once) or recorded as skipped (skip).
	Covers     int       `json:"covers,omitempty"`
	Params     string    `json:"params,omitempty"`
	Status     string    `json:"status"`
	Executor   string    `json:"executor,omitempty"`
	Error      string    `json:"error,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// Empty is an empty message.
type Empty struct{}

// Stats summarises recent runs for the console's dashboard.
type Stats struct {
	Since      time.Time      `json:"since"`
	ByStatus   map[string]int `json:"by_status"`
	Total      int            `json:"total"`
	Success    float64        `json:"success_rate"` // succeeded / (succeeded + failed): killed and skipped runs are neither
	LateP50    float64        `json:"lateness_p50_ms"`
	LateP99    float64        `json:"lateness_p99_ms"`
	PerDay     []DayCount     `json:"per_day"`
	Jobs       int            `json:"jobs"`
	Executors  int            `json:"executors"`
	Partitions []int          `json:"partitions"`
}

// DayCount is the runs of one day (UTC).
type DayCount struct {
	Day       string `json:"day"`
	Runs      int    `json:"runs"`
	Succeeded int    `json:"succeeded"`
	Failed    int    `json:"failed"`
	Killed    int    `json:"killed"` // by an operator: neither a success nor a failure
}

// Run statuses.
const (
	StatusPending   = "pending"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusKilled    = "killed"
	StatusDiscarded = "discarded"
	// StatusSkipped records fires the misfire policy skipped: never run,
	// kept so that no fire is lost silently.
	StatusSkipped = "skipped"
)

// ExecutorInfo is a registered executor.
type ExecutorInfo struct {
	App      string    `json:"app" msgpack:"app"`
	Addr     string    `json:"addr" msgpack:"addr"`
	Capacity int       `json:"capacity" msgpack:"capacity"`
	Running  int       `json:"running" msgpack:"running"`
	Handlers []string  `json:"handlers" msgpack:"handlers"`
	LastBeat time.Time `json:"last_beat" msgpack:"last_beat"`
	// SignKey signs requests to the executor; never shown.
	SignKey string `json:"-" msgpack:"-"`
}

// RunRequest asks an executor to run a job (tangram.Executor/Run).
type RunRequest struct {
	RunID      int64  `msgpack:"run"`
	JobID      int64  `msgpack:"job"`
	Job        string `msgpack:"name"`
	Handler    string `msgpack:"handler"`
	Params     string `msgpack:"params"`
	ShardIndex int    `msgpack:"shard"`
	ShardTotal int    `msgpack:"shards"`
	Attempt    int    `msgpack:"attempt"`
	Block      string `msgpack:"block"`
	TimeoutMS  int64  `msgpack:"timeout_ms"`
	FireAt     int64  `msgpack:"fire_at"`
	// Deadline (unix ms, the executor's clock) is the last moment the
	// executor may take the run: its assignment (started_at in the store)
	// plus DispatchWindow. A request held up past it — a scheduler paused
	// while the run sat in its wheel, a call retried late — is refused, so
	// a run the scheduler has since declared lost (and retried) never runs
	// as well. Zero: no deadline.
	Deadline int64 `msgpack:"deadline,omitempty"`
	// Glue jobs carry their current source.
	GlueType    string `msgpack:"glue_type,omitempty"`
	GlueVersion int    `msgpack:"glue_version,omitempty"`
	GlueSource  string `msgpack:"glue,omitempty"`
	// Stamp and Sig authenticate the request: HMAC-SHA256 with the key the
	// executor registered, over the fields above and Stamp (unix ms).
	Stamp int64  `msgpack:"stamp"`
	Sig   string `msgpack:"sig"`
	// TraceParent is the W3C traceparent of the scheduler's span for this
	// run: the executor's span of the run joins its trace. Not signed (a
	// forged one can only mislabel a trace).
	TraceParent string `msgpack:"traceparent,omitempty"`
}

func (r *RunRequest) canonical() string {
	src := sha256.Sum256([]byte(r.GlueSource))
	return fmt.Sprintf("run\n%d\n%d\n%s\n%s\n%d\n%d\n%d\n%s\n%d\n%d\n%d\n%d\n%s\n%d\n%x\n%s", r.RunID, r.JobID, r.Job, r.Handler,
		r.ShardIndex, r.ShardTotal, r.Attempt, r.Block, r.TimeoutMS, r.FireAt, r.Deadline, r.Stamp, r.GlueType, r.GlueVersion, src, r.Params)
}

// RunReply says whether the executor took the run.
type RunReply struct {
	// Discarded: the job's previous run is still going and its block
	// strategy is discard_later.
	Discarded bool `msgpack:"discarded,omitempty"`
}

// KillRequest cancels a run on its executor (tangram.Executor/Kill).
type KillRequest struct {
	RunID int64  `msgpack:"run"`
	Stamp int64  `msgpack:"stamp"`
	Sig   string `msgpack:"sig"`
}

func (r *KillRequest) canonical() string { return fmt.Sprintf("kill\n%d\n%d", r.RunID, r.Stamp) }

func sign(key, msg string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

// A flow job is a DAG workflow (what XXL-JOB lacks, xxl-job #172): its
// trigger fires the whole graph. Each node runs another job; a node starts
// when all the nodes it comes after have succeeded (fan-out and fan-in),
// with their outputs, one per line, as its params (or its job's own params
// when they had none). A node that fails for good (retries spent) fails the
// flow and nothing after it starts; RetryNode runs it again and the flow
// resumes from there.
type Flow struct {
	Nodes []FlowNode `json:"nodes"`
}

// FlowNode is one step of a flow.
type FlowNode struct {
	Name string `json:"name"`
	Job  int64  `json:"job"` // the job it runs
	// JobName names the job instead of Job (a flow file written before the
	// IDs are known); the server resolves it to Job when the flow is saved.
	JobName string   `json:"job_name,omitempty"`
	After   []string `json:"after,omitempty"` // upstream nodes
}

// FlowHandler is the handler name of flow jobs.
const FlowHandler = "flow"

// MaxFlowNodes bounds a flow.
const MaxFlowNodes = 256

// Flow run statuses (runs use the run statuses).
const (
	FlowRunning   = "running"
	FlowSucceeded = "succeeded"
	FlowFailed    = "failed"
)

func (f *Flow) validate(self int64) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w flow: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	if len(f.Nodes) == 0 || len(f.Nodes) > MaxFlowNodes {
		return bad("%d nodes, want 1–%d", len(f.Nodes), MaxFlowNodes)
	}
	idx := map[string]int{}
	for i, n := range f.Nodes {
		if !validName(n.Name) {
			return bad("node name %q: 1–128 letters, digits, '.', '_', ':' or '-'", n.Name)
		}
		if _, dup := idx[n.Name]; dup {
			return bad("two nodes named %q", n.Name)
		}
		if n.Job <= 0 || (self != 0 && n.Job == self) {
			return bad("node %s: job %d: want another job's ID", n.Name, n.Job)
		}
		idx[n.Name] = i
	}
	indeg := make([]int, len(f.Nodes))
	for _, n := range f.Nodes {
		for _, a := range n.After {
			if _, ok := idx[a]; !ok {
				return bad("node %s comes after %q, which is not a node", n.Name, a)
			}
			if a == n.Name {
				return bad("node %s comes after itself", n.Name)
			}
		}
		indeg[idx[n.Name]] = len(n.After)
	}
	// Kahn: every node must be reachable in a topological order.
	var ready []string
	for i, n := range f.Nodes {
		if indeg[i] == 0 {
			ready = append(ready, n.Name)
		}
	}
	seen := 0
	for len(ready) > 0 {
		cur := ready[0]
		ready = ready[1:]
		seen++
		for i, n := range f.Nodes {
			for _, a := range n.After {
				if a == cur {
					indeg[i]--
					if indeg[i] == 0 {
						ready = append(ready, n.Name)
					}
				}
			}
		}
	}
	if seen != len(f.Nodes) {
		return bad("the nodes form a cycle")
	}
	return nil
}

// FlowRun is one run of a flow job.
type FlowRun struct {
	ID         int64           `json:"id"`
	JobID      int64           `json:"job_id"`
	FireAt     time.Time       `json:"fire_at"`
	Status     string          `json:"status"`
	CreatedAt  time.Time       `json:"created_at"`
	FinishedAt time.Time       `json:"finished_at,omitzero"`
	Nodes      []FlowNodeState `json:"nodes,omitempty"`
}

// FlowNodeState is a node of a flow run.
type FlowNodeState struct {
	FlowNode
	Status  string `json:"status"` // "waiting" until started
	RunID   int64  `json:"run_id,omitempty"`
	Attempt int    `json:"attempt"`
	Output  string `json:"output,omitempty"`
	Error   string `json:"error,omitempty"`
}

// Glue jobs carry their code: a job whose handler is "glue:shell",
// "glue:python3" or "glue:go" runs the job's current glue source on an
// executor that opted in to that type — no deploy. Every saved source is a
// new version; old ones stay (history, diff, rollback).
const (
	GlueShell  = "shell"
	GluePython = "python3"
	GlueGo     = "go"
)

// MaxGlueBytes bounds a glue source.
const MaxGlueBytes = 256 << 10

// GlueType returns the glue type of a handler name ("" when not glue).
func GlueType(handler string) string {
	t, ok := strings.CutPrefix(handler, "glue:")
	if !ok {
		return ""
	}
	return t
}

func validGlue(t string) bool { return t == GlueShell || t == GluePython || t == GlueGo }

// GlueVersion is one saved source of a glue job.
type GlueVersion struct {
	JobID     int64     `json:"job_id"`
	Version   int       `json:"version"`
	Source    string    `json:"source,omitempty"`
	Note      string    `json:"note,omitempty"`
	Author    string    `json:"author"`
	CreatedAt time.Time `json:"created_at"`
}

// Diff is a line diff of a and b in unified form (whole-file hunk: glue
// sources are small), from a longest common subsequence.
func Diff(nameA, nameB, a, b string) string {
	x, y := splitLines(a), splitLines(b)
	if len(x)*len(y) > 25_000_000 {
		return fmt.Sprintf("--- %s\n+++ %s\n(too large to diff: %d and %d lines)\n", nameA, nameB, len(x), len(y))
	}
	// lcs[i][j] = LCS length of x[i:], y[j:]
	lcs := make([][]int32, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int32, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "--- %s\n+++ %s\n@@ -1,%d +1,%d @@\n", nameA, nameB, len(x), len(y))
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			out.WriteString(" " + x[i] + "\n")
			i++
			j++
		case j < len(y) && (i == len(x) || lcs[i][j+1] >= lcs[i+1][j]):
			out.WriteString("+" + y[j] + "\n")
			j++
		default:
			out.WriteString("-" + x[i] + "\n")
			i++
		}
	}
	return out.String()
}

func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// BeatRequest registers or renews an executor (tangram.Job/Heartbeat).
type BeatRequest struct {
	App      string   `msgpack:"app"`
	Addr     string   `msgpack:"addr"`
	SignKey  string   `msgpack:"key"`
	Capacity int      `msgpack:"capacity"`
	Running  int      `msgpack:"running"`
	Handlers []string `msgpack:"handlers"`
	// Runs lists the runs this executor has: running, queued, or finished
	// with the report not yet acknowledged. A run the store says is running
	// here but is not listed (a dispatch cut short by a crash, an executor
	// restarted at the same address) is failed, and retried per its job.
	Runs []int64 `msgpack:"runs"`
	// Stamp (unix ms, the executor's clock) is when Runs was taken. The
	// scheduler fails only runs assigned more than twice DispatchWindow
	// before it: an executor refuses a run past its Deadline, so a run not
	// listed then can no longer arrive, however late this heartbeat is.
	Stamp int64 `msgpack:"stamp,omitempty"`
}

// DispatchWindow is how long after its assignment a run may still be
// taken by its executor (RunRequest.Deadline).
const DispatchWindow = 5 * time.Second

// ReportRequest is a run's outcome (tangram.Job/Report).
type ReportRequest struct {
	App    string `msgpack:"app"`
	RunID  int64  `msgpack:"run"`
	Status string `msgpack:"status"`
	Error  string `msgpack:"error,omitempty"`
	Output string `msgpack:"output,omitempty"`
}

// LogRequest appends a chunk to a run's log (tangram.Job/Log).
type LogRequest struct {
	App   string `msgpack:"app"`
	RunID int64  `msgpack:"run"`
	Seq   int    `msgpack:"seq"`
	Text  string `msgpack:"text"`
}

// DeliverRequest carries an executor's queued log chunks and reports in
// one call (tangram.Job/Deliver): the logs are stored, then the reports
// recorded, all in one transaction.
type DeliverRequest struct {
	App     string          `msgpack:"app"`
	Logs    []LogRequest    `msgpack:"logs,omitempty"`
	Reports []ReportRequest `msgpack:"reports,omitempty"`
}

// MaxDeliver bounds the items of one DeliverRequest.
const MaxDeliver = 1024

// LeaveRequest removes an executor (tangram.Job/Leave).
type LeaveRequest struct {
	App  string `msgpack:"app"`
	Addr string `msgpack:"addr"`
}

// Alarm is what a job's alarm webhook receives (a JSON POST) when a run
// fails for good — its retries spent — or times out, or is killed.
type Alarm struct {
	Job      string    `json:"job"`
	JobID    int64     `json:"job_id"`
	App      string    `json:"app"`
	RunID    int64     `json:"run_id"`
	Status   string    `json:"status"`
	Error    string    `json:"error,omitempty"`
	Attempt  int       `json:"attempt"`
	FireAt   time.Time `json:"fire_at"`
	Executor string    `json:"executor,omitempty"`
	Server   string    `json:"server"`
}

func validWebhook(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(s) > 2048 {
		return fmt.Errorf("%w alarm_webhook %q: want an http(s) URL of at most 2 KiB", ErrInvalid, s)
	}
	return nil
}

const maxAlarmEmails = 20

func validEmails(l []string) error {
	if len(l) > maxAlarmEmails {
		return fmt.Errorf("%w alarm_email: %d addresses, at most %d", ErrInvalid, len(l), maxAlarmEmails)
	}
	for _, a := range l {
		if _, err := mail.ParseAddress(a); err != nil || strings.ContainsAny(a, "\r\n") || len(a) > 254 {
			return fmt.Errorf("%w alarm_email %q: not an e-mail address", ErrInvalid, a)
		}
	}
	return nil
}

// Limits of what an executor sends the scheduler.
const (
	MaxLogChunk = 64 << 10 // bytes of log text in one LogRequest
	MaxOutput   = 64 << 10 // bytes of a run's output in a ReportRequest
)

// Sign sets r.Sig to the HMAC of the request under the executor's key.
func (r *RunRequest) Sign(key string) { r.Sig = sign(key, r.canonical()) }

// Sign sets r.Sig to the HMAC of the request under the executor's key.
func (r *KillRequest) Sign(key string) { r.Sig = sign(key, r.canonical()) }

// ValidName reports whether s may name a job, an app or a handler.
func ValidName(s string) error {
	if !validName(s) {
		return fmt.Errorf("%w name %q: 1-128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit", ErrInvalid, s)
	}
	return nil
}
