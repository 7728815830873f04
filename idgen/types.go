package idgen

import (
	"fmt"
	"strings"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// The ID service's RPC methods (service tangram.ID), served by the id
// component of tangram server.
const (
	MethodSegment = "tangram.ID/Segment" // take the next range of a tag
	MethodNext    = "tangram.ID/Next"    // IDs of a tag, from the server's own buffers
	MethodLease   = "tangram.ID/Lease"   // lease a worker number
	MethodRenew   = "tangram.ID/Renew"
	MethodRelease = "tangram.ID/Release"
)

// More errors of the ID service.
var (
	// ErrLeaseLost: a worker lease was not renewed in time (or was taken
	// over); its generator issues nothing more.
	ErrLeaseLost = errcode.New(errcode.Unavailable, "idgen: worker lease lost")
	// ErrNoLease: the lease renewed or released has ended (expired, or
	// the number was leased to another).
	ErrNoLease = errcode.New(errcode.NotFound, "idgen: no such lease")
	// ErrNoWorker: every worker number of the pool is leased.
	ErrNoWorker = errcode.New(errcode.Unavailable, "idgen: no free worker number")
	// ErrBadTag: a tag or pool name that is not valid.
	ErrBadTag = errcode.New(errcode.BadRequest, "idgen: bad tag")
	// ErrNoTag: the tag does not exist (and the server does not create
	// tags on first use).
	ErrNoTag = errcode.New(errcode.NotFound, "idgen: no such tag")
)

// ValidName checks a tag or worker-pool name: 1–128 characters of
// letters, digits and . _ - : /
func ValidName(kind, s string) error {
	if s == "" || len(s) > 128 || strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-:/", r))
	}) >= 0 {
		return fmt.Errorf("%w: %s %q: want 1–128 letters, digits or . _ - : /", ErrBadTag, kind, s)
	}
	return nil
}

// SegmentRequest asks for the next range of Tag. Step is the size the
// client would like (0: the tag's configured step); the server keeps it
// within [the tag's step, MaxStep].
type SegmentRequest struct {
	Tag  string `json:"tag"`
	Step int64  `json:"step,omitempty"`
}

// Segment is a range of IDs owned by one caller: [Start, End).
type Segment struct {
	Tag   string `json:"tag"`
	Start int64  `json:"start"`
	End   int64  `json:"end"`
	// Step is the tag's configured step (the minimum a client asks for).
	Step int64 `json:"step"`
}

// NextRequest asks the server for Count (1–10,000) IDs of Tag.
type NextRequest struct {
	Tag   string `json:"tag"`
	Count int    `json:"count,omitempty"`
}

// NextReply holds the IDs, ascending.
type NextReply struct {
	IDs []int64 `json:"ids"`
}

// Tag is a segment tag's row: MaxID is the end of the last range handed
// out (the next range starts there).
type Tag struct {
	Tag         string `json:"tag"`
	MaxID       int64  `json:"max_id"`
	Step        int64  `json:"step"`
	Description string `json:"description,omitempty"`
	// UpdatedAt is Unix milliseconds of the last range handed out.
	UpdatedAt int64 `json:"updated_at"`
}

// TagRequest creates a tag (or changes its step and description; Start
// only applies to a new tag).
type TagRequest struct {
	Tag         string `json:"tag"`
	Start       int64  `json:"start,omitempty"`
	Step        int64  `json:"step,omitempty"`
	Description string `json:"description,omitempty"`
}

// LeaseRequest leases a worker number of Pool in [0, Max], or renews or
// releases (Worker, Term) of it. NowMs is the caller's clock when it sent
// the request and LastMs the time of the last ID it issued (Unix ms): the
// server records NowMs + TTL as the earliest time the next holder of the
// number may issue from, so two holders never share a time.
type LeaseRequest struct {
	Pool   string `json:"pool"`
	Max    int64  `json:"max,omitempty"`
	Holder string `json:"holder,omitempty"`
	TTLMs  int64  `json:"ttl_ms,omitempty"`
	Worker int64  `json:"worker"`
	Term   int64  `json:"term,omitempty"`
	NowMs  int64  `json:"now_ms,omitempty"`
	LastMs int64  `json:"last_ms,omitempty"`
}

// WorkerLease is a leased worker number.
type WorkerLease struct {
	Pool   string `json:"pool"`
	Worker int64  `json:"worker"`
	// Term grows with every new holder of the number: a fencing token.
	Term   int64  `json:"term"`
	Holder string `json:"holder"`
	TTLMs  int64  `json:"ttl_ms"`
	// ExpiresAt is Unix ms by the server's clock.
	ExpiresAt int64 `json:"expires_at"`
	// NotBeforeMs: issue no ID with an earlier time (the previous holder
	// may have used times up to it).
	NotBeforeMs int64 `json:"not_before_ms"`
	// LastMs is the last time the holder reported issuing at.
	LastMs int64 `json:"last_ms"`
}

// Empty is an empty reply.
type Empty struct{}
