package txn

import (
	"fmt"
	"strings"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// The coordinator's RPC methods (service tangram.Txn).
const (
	MethodBegin    = "tangram.Txn/Begin"
	MethodRegister = "tangram.Txn/Register"
	MethodSubmit   = "tangram.Txn/Submit"
	MethodAbort    = "tangram.Txn/Abort"
	MethodGet      = "tangram.Txn/Get"
	MethodList     = "tangram.Txn/List"
	MethodRetry    = "tangram.Txn/Retry"
	MethodLocks    = "tangram.Txn/Locks"
)

// The headers (HTTP) and metadata keys (RPC) a branch call carries. The
// XID key is the platform's: RPC metadata and MQ properties carry it under
// the same name.
const (
	HeaderXID    = "tangram-xid"
	HeaderBranch = "tangram-branch"
	HeaderOp     = "tangram-op"
	HeaderMode   = "tangram-txn-mode"
)

// Mode is a global transaction's protocol.
type Mode string

// The modes.
const (
	// ModeSaga: ordered (or concurrent) actions, each with a compensation
	// run in reverse when a later action fails.
	ModeSaga Mode = "saga"
	// ModeTCC: the initiator calls each branch's Try itself; the
	// coordinator then calls every Confirm, or every Cancel.
	ModeTCC Mode = "tcc"
	// ModeXA: each branch is an XA transaction of its database, prepared
	// by the initiator's call and committed or rolled back by the
	// coordinator (XA on MariaDB/MySQL, prepared transactions on
	// PostgreSQL).
	ModeXA Mode = "xa"
	// ModeAT: each branch is a local transaction of a database opened
	// through txn/at, which commits at once after recording undo images
	// and taking global row locks; the coordinator then has the undo
	// deleted (commit) or applied (rollback).
	ModeAT Mode = "at"
)

// Valid reports whether m is a known mode.
func (m Mode) Valid() bool { return m == ModeSaga || m == ModeTCC || m == ModeXA || m == ModeAT }

// Prepared reports whether m's transactions are begun, then have branches
// registered (TCC, XA, AT), rather than submitted whole (saga).
func (m Mode) Prepared() bool { return m == ModeTCC || m == ModeXA || m == ModeAT }

// Status is a global transaction's state.
type Status string

// The states. prepared → committing → committed, or → aborting → aborted;
// failed parks a transaction whose phase two ran out of attempts (Retry
// resumes it, Abort turns a parked commit of a saga into compensation).
const (
	StatusPrepared   Status = "prepared"
	StatusCommitting Status = "committing"
	StatusAborting   Status = "aborting"
	StatusCommitted  Status = "committed"
	StatusAborted    Status = "aborted"
	StatusFailed     Status = "failed"
)

// Final reports whether s is an end state (committed or aborted).
func (s Status) Final() bool { return s == StatusCommitted || s == StatusAborted }

// Op is one operation of a branch.
type Op string

// The operations.
const (
	OpAction     Op = "action"     // saga forward step
	OpCompensate Op = "compensate" // saga undo step
	OpTry        Op = "try"
	OpConfirm    Op = "confirm"
	OpCancel     Op = "cancel"
	// OpMsg is a two-phase message's local transaction (txn/msg): its
	// barrier row tells the broker's check-back whether it committed.
	OpMsg Op = "msg"
)

// Origin is the forward operation an undo operation undoes ("" for a
// forward operation): the barrier's empty-rollback and suspension checks
// pair them.
func (o Op) Origin() Op {
	switch o {
	case OpCompensate:
		return OpAction
	case OpCancel:
		return OpTry
	}
	return ""
}

// Valid reports whether o is a known operation.
func (o Op) Valid() bool {
	switch o {
	case OpAction, OpCompensate, OpTry, OpConfirm, OpCancel, OpMsg:
		return true
	}
	return false
}

// Errors of the package. Over RPC and HTTP the sentinel's words may be
// lost; the code is kept.
var (
	// ErrNotFound: no global transaction with that XID.
	ErrNotFound = errcode.New(errcode.NotFound, "txn: no such transaction")
	// ErrState: the transaction's state does not allow the operation
	// (registering a branch after submit, aborting a committed one).
	ErrState = errcode.New(errcode.Conflict, "txn: wrong state")
	// ErrBadRequest: a request that is not valid.
	ErrBadRequest = errcode.New(errcode.BadRequest, "txn: bad request")
	// ErrFailure is what a branch returns for a business failure: the
	// action or Try cannot succeed, so the transaction rolls back. (Any
	// other error is retried.) A participant's HTTP handler answers 409
	// for it.
	ErrFailure = errcode.New(errcode.Conflict, "txn: branch failed")
	// ErrSuspended: a Try arrived after its branch was cancelled (the
	// barrier refuses it: the hanging-transaction case).
	ErrSuspended = errcode.New(errcode.Conflict, "txn: try after cancel refused")
)

// Step is one branch as the initiator describes it: a saga's action and
// compensation, or a TCC branch's confirm and cancel (its Try the
// initiator calls itself). Targets are http:// or https:// URLs the
// coordinator POSTs Payload to, or rpc://SERVICE/Service/Method (a
// registry service, or host:port) it calls with BranchRequest
// (ParseTarget).
type Step struct {
	Action     string `json:"action,omitempty"`
	Compensate string `json:"compensate,omitempty"`
	Confirm    string `json:"confirm,omitempty"`
	Cancel     string `json:"cancel,omitempty"`
	// Payload is the request body (JSON, usually) sent to each target.
	Payload []byte `json:"payload,omitempty"`
	// After lists the steps (by index) that must succeed before this one
	// runs, in a concurrent saga.
	After []int `json:"after,omitempty"`
}

// Options are a transaction's policies; zero fields take the server's
// defaults.
type Options struct {
	// TimeoutMs: a prepared transaction not submitted within it is
	// aborted.
	TimeoutMs int64 `json:"timeout_ms,omitempty"`
	// RetryMs is the first retry interval of a failing phase-two call; it
	// doubles per attempt up to RetryMaxMs.
	RetryMs    int64 `json:"retry_ms,omitempty"`
	RetryMaxMs int64 `json:"retry_max_ms,omitempty"`
	// MaxAttempts: after this many failed calls of one branch operation
	// the transaction is parked as failed (and an alarm raised) instead of
	// retried forever. Negative: no limit.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// BranchTimeoutMs bounds one branch call.
	BranchTimeoutMs int64 `json:"branch_timeout_ms,omitempty"`
	// Concurrent runs a saga's actions at once (ordered only by Step.After).
	Concurrent bool `json:"concurrent,omitempty"`
}

// BeginRequest starts a global transaction (TCC: prepared, branches
// registered next; saga: submitted with Steps at once through Submit).
type BeginRequest struct {
	// XID is the caller's choice of ID (default: one the server draws).
	XID     string  `json:"xid,omitempty"`
	Mode    Mode    `json:"mode"`
	App     string  `json:"app"`
	Options Options `json:"options,omitempty"`
}

// RegisterRequest adds a branch to a prepared transaction (TCC, XA, AT).
type RegisterRequest struct {
	XID  string `json:"xid"`
	Step Step   `json:"step"`
	// Resource and Locks (AT): the global row locks the branch takes, keys
	// of rows ("table:pk") of the database named Resource. The branch is
	// registered only if none is held by another transaction; else the
	// reply names the holder and nothing is registered.
	Resource string   `json:"resource,omitempty"`
	Locks    []string `json:"locks,omitempty"`
}

// RegisterReply names the branch, or (AT) the lock that stopped it.
type RegisterReply struct {
	Branch   int           `json:"branch"`
	Conflict *LockConflict `json:"conflict,omitempty"`
}

// LockConflict is a global row lock held by another transaction.
type LockConflict struct {
	Resource string `json:"resource"`
	Key      string `json:"key"`
	// XID holds it ("" when it was taken at the same moment).
	XID string `json:"xid,omitempty"`
}

// LocksRequest asks whether rows are free for XID (AT's SELECT … FOR
// UPDATE): locked by no other transaction.
type LocksRequest struct {
	XID      string   `json:"xid,omitempty"`
	Resource string   `json:"resource"`
	Keys     []string `json:"keys"`
}

// LocksReply names the first row held by another transaction (nil: all
// free).
type LocksReply struct {
	Conflict *LockConflict `json:"conflict,omitempty"`
}

// Limits of a branch's lock set.
const (
	MaxLocks      = 10000
	MaxLockKeyLen = 191
)

// SubmitRequest commits a global transaction: a TCC one's branches are
// confirmed; a saga is created with Steps and run. With Wait the reply
// comes when phase two has ended (or WaitMs passed).
type SubmitRequest struct {
	XID     string  `json:"xid"`
	Mode    Mode    `json:"mode,omitempty"`
	App     string  `json:"app,omitempty"`
	Steps   []Step  `json:"steps,omitempty"`
	Options Options `json:"options,omitempty"`
	Wait    bool    `json:"wait,omitempty"`
	WaitMs  int64   `json:"wait_ms,omitempty"`
}

// XIDRequest names a transaction (Abort, Get, Retry).
type XIDRequest struct {
	XID    string `json:"xid"`
	Reason string `json:"reason,omitempty"`
	Wait   bool   `json:"wait,omitempty"`
	WaitMs int64  `json:"wait_ms,omitempty"`
}

// ListRequest filters a list.
type ListRequest struct {
	Status Status `json:"status,omitempty"`
	Mode   Mode   `json:"mode,omitempty"`
	App    string `json:"app,omitempty"`
	Limit  int    `json:"limit,omitempty"`
	// Cursor: the last XID of the previous page (lists are newest first).
	Cursor string `json:"cursor,omitempty"`
}

// ListReply is one page.
type ListReply struct {
	Items []Global `json:"items"`
	Next  string   `json:"next,omitempty"`
}

// Global is a global transaction.
type Global struct {
	XID    string `json:"xid"`
	Mode   Mode   `json:"mode"`
	App    string `json:"app"`
	Status Status `json:"status"`
	// Phase is the decision once made: "commit" or "abort" ("" while
	// prepared). A failed (parked) transaction resumes in it.
	Phase   string  `json:"phase,omitempty"`
	Options Options `json:"options"`
	// Reason says why it is aborting, aborted or failed.
	Reason string `json:"reason,omitempty"`
	// Times are Unix milliseconds.
	CreatedAt int64 `json:"created_at"`
	UpdatedAt int64 `json:"updated_at"`
	// NextAt is when phase two is next tried (0: not scheduled).
	NextAt   int64    `json:"next_at,omitempty"`
	Branches []Branch `json:"branches,omitempty"`
	Events   []Event  `json:"events,omitempty"`
}

// Branch is one branch and the state of its operations.
type Branch struct {
	ID   int  `json:"id"`
	Step Step `json:"step"`
	// Done lists the operations that succeeded.
	Done []Op `json:"done,omitempty"`
	// Attempts counts failed calls of the operation now pending.
	Attempts int `json:"attempts,omitempty"`
}

// Has reports whether op succeeded on b.
func (b Branch) Has(op Op) bool {
	for _, d := range b.Done {
		if d == op {
			return true
		}
	}
	return false
}

// Event is one call of a branch operation (the timeline).
type Event struct {
	Branch int    `json:"branch"`
	Op     Op     `json:"op"`
	At     int64  `json:"at"`
	Ms     int64  `json:"ms"`
	Result string `json:"result"` // ok, failure, error
	Error  string `json:"error,omitempty"`
}

// Empty is an empty reply.
type Empty struct{}

// ValidXID checks an XID chosen by a caller: 1–64 letters, digits, '-',
// '_', '.', ':'.
func ValidXID(x string) error {
	if x == "" || len(x) > 64 || strings.IndexFunc(x, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == ':')
	}) >= 0 {
		return fmt.Errorf("%w: xid %q: want 1-64 letters, digits, '-', '_', '.', ':'", ErrBadRequest, x)
	}
	return nil
}
