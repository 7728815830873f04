package lock

import (
	"fmt"
	"strings"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// The server backend's RPC methods (service tangram.Lock).
const (
	MethodOpen      = "tangram.Lock/Open"
	MethodKeepAlive = "tangram.Lock/KeepAlive"
	MethodClose     = "tangram.Lock/Close"
	MethodCreate    = "tangram.Lock/Create"
	MethodDelete    = "tangram.Lock/Delete"
	MethodGet       = "tangram.Lock/Get"
	MethodChildren  = "tangram.Lock/Children"
	MethodWait      = "tangram.Lock/Wait"
	MethodAcquire   = "tangram.Lock/Acquire"
	MethodAwaitHead = "tangram.Lock/AwaitHead"
)

// More errors of the server backend.
var (
	// ErrSessionExpired: the session is gone (not kept alive for its TTL,
	// or closed); its ephemeral nodes, locks included, are deleted.
	ErrSessionExpired = errcode.New(errcode.NotFound, "lock: session expired")
	// ErrNoNode: no node at that path.
	ErrNoNode = errcode.New(errcode.NotFound, "lock: no such node")
	// ErrNodeExists: a node already has that path.
	ErrNodeExists = errcode.New(errcode.AlreadyExists, "lock: node exists")
	// ErrBadPath: a path or lock name that is not valid.
	ErrBadPath = errcode.New(errcode.BadRequest, "lock: bad path")
)

// SessionRequest opens (Owner, TTLMs), renews or closes (ID) a session.
type SessionRequest struct {
	ID    string `json:"id,omitempty"`
	Owner string `json:"owner,omitempty"`
	TTLMs int64  `json:"ttl_ms,omitempty"`
}

// Session is a client's session: its ephemeral nodes live while it is
// kept alive.
type Session struct {
	ID    string `json:"id"`
	Owner string `json:"owner"`
	// Principal is who opened it.
	Principal string `json:"principal"`
	TTLMs     int64  `json:"ttl_ms"`
	// ExpiresAt and CreatedAt are Unix milliseconds.
	ExpiresAt int64 `json:"expires_at"`
	CreatedAt int64 `json:"created_at"`
	// Nodes is how many ephemeral nodes it holds (in lists).
	Nodes int `json:"nodes"`
}

// Node is one node of the tree.
type Node struct {
	Path   string `json:"path"`
	Parent string `json:"parent"`
	// Seq is drawn from the parent's counter, which only grows: a
	// sequential node's name ends with it, and a lock node's Seq is the
	// lock's fencing token.
	Seq int64 `json:"seq"`
	// Session is the owning session of an ephemeral node ("" when
	// persistent).
	Session   string `json:"session,omitempty"`
	Data      string `json:"data,omitempty"`
	CreatedAt int64  `json:"created_at"`
}

// NodeRequest creates (Path is the prefix of a sequential node's name),
// gets, lists the children of or deletes a node.
type NodeRequest struct {
	Session    string `json:"session,omitempty"`
	Path       string `json:"path"`
	Data       string `json:"data,omitempty"`
	Ephemeral  bool   `json:"ephemeral,omitempty"`
	Sequential bool   `json:"sequential,omitempty"`
}

// NodesReply lists nodes in Seq order.
type NodesReply struct {
	Nodes []Node `json:"nodes"`
}

// WaitRequest waits up to TimeoutMs for the node at Path to be deleted
// (Wait) or, for a lock node, for it to be the first (AwaitHead).
type WaitRequest struct {
	Path      string `json:"path"`
	TimeoutMs int64  `json:"timeout_ms"`
}

// WaitReply: Done when the awaited event happened before the timeout.
type WaitReply struct {
	Done bool `json:"done"`
}

// AcquireRequest joins the queue of the lock Name with an ephemeral
// sequential node of Session (Try: only if nobody holds or waits).
type AcquireRequest struct {
	Session string `json:"session"`
	Name    string `json:"name"`
	Data    string `json:"data,omitempty"`
	Try     bool   `json:"try,omitempty"`
	// Key makes the request safe to repeat (Curator's protected mode):
	// the node's name carries it ("_c_<key>-lock-<seq>"), and a repeated
	// request finds the node its lost reply had created instead of
	// queueing twice. Up to 32 letters and digits.
	Key string `json:"key,omitempty"`
	// Repeat marks a request sent again after an unknown outcome: only
	// then does the server look for the node a lost reply had created.
	Repeat bool `json:"repeat,omitempty"`
}

// AcquireReply is the lock node and whether it is first (the lock held);
// Node is empty when a Try found the lock taken.
type AcquireReply struct {
	Node Node `json:"node"`
	Held bool `json:"held"`
}

// LockInfo is one lock as listed: its holder and its queue.
type LockInfo struct {
	Name    string `json:"name"`
	Holder  Node   `json:"holder"`
	Waiters []Node `json:"waiters"`
}

// Empty is a request or reply without fields.
type Empty struct{}

// LockParent is the parent path of lock name's nodes: "/" + name.
func LockParent(name string) (string, error) {
	p := "/" + strings.Trim(name, "/")
	if err := ValidPath(p); err != nil || p == "/" {
		return "", fmt.Errorf("%w: lock name %q: want segments of letters, digits, '.', '_', '-' or ':' separated by '/'", ErrBadPath, name)
	}
	return p, nil
}

// ValidPath checks a node path: "/" then segments of letters, digits,
// '.', '_', '-' or ':' separated by single '/', at most 512 bytes; the
// first segment is the app whose permissions govern the node.
func ValidPath(p string) error {
	if len(p) < 2 || len(p) > 512 || p[0] != '/' || p[len(p)-1] == '/' {
		return fmt.Errorf("%w %q: want /app/... of at most 512 bytes, no trailing '/'", ErrBadPath, p)
	}
	for _, seg := range strings.Split(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w %q: empty, '.' or '..' segment", ErrBadPath, p)
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' || r == ':') {
				return fmt.Errorf("%w %q: character %q", ErrBadPath, p, r)
			}
		}
	}
	return nil
}

// PathApp is the app a path belongs to: its first segment.
func PathApp(p string) string {
	p = strings.TrimPrefix(p, "/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return p
}

// PathParent is the parent of a path ("/" for a top-level node).
func PathParent(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}
