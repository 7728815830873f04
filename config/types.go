package config

import "fmt"

// Env is an environment (dev, test, prod, or user-defined).
type Env struct {
	Name             string `json:"name"`
	Description      string `json:"description,omitempty"`
	EmergencyPublish bool   `json:"emergency_publish"`
	CreatedAt        int64  `json:"created_at"`
}

// App is an application.
type App struct {
	Name        string `json:"name"`
	Owner       string `json:"owner"`
	Description string `json:"description,omitempty"`
	CreatedAt   int64  `json:"created_at"`
}

// Namespace is a namespace's definition and state.
type Namespace struct {
	ID                int64  `json:"id"`
	Coord                    // env/app/cluster/ns
	Format            Format `json:"format"`
	Public            bool   `json:"public"`
	LinkApp           string `json:"link_app,omitempty"`
	RequireApproval   bool   `json:"require_approval"`
	SeparatePublisher bool   `json:"separate_publisher"`
	DraftVersion      int64  `json:"draft_version"`
	LastEditor        string `json:"last_editor,omitempty"`
	ReleaseID         int64  `json:"release_id"`
	CreatedAt         int64  `json:"created_at"`
}

// NamespaceSpec describes a namespace to create.
type NamespaceSpec struct {
	Name   string `json:"name"`
	Format string `json:"format"`
	// Public makes the namespace one that other apps can associate with.
	Public bool `json:"public"`
	// LinkApp associates this app with the public namespace of LinkApp
	// (same name): clients get its values, overridden by this app's own.
	LinkApp string `json:"link_app"`
}

// Settings are a namespace's release rules.
type Settings struct {
	RequireApproval   *bool `json:"require_approval,omitempty"`
	SeparatePublisher *bool `json:"separate_publisher,omitempty"`
}

// Edit is a batch of draft changes.
type Edit struct {
	Set    []Item   `json:"set,omitempty"`
	Delete []string `json:"delete,omitempty"`
	// Replace deletes every draft item not in Set (an import).
	Replace bool `json:"replace,omitempty"`
	// Version, when set, is the draft version the caller last saw; a
	// different current version fails with ErrConflict.
	Version *int64 `json:"version,omitempty"`
}

// ConflictError reports a stale draft version.
type ConflictError struct {
	Current int64
	Given   int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("draft changed: current version is %d, you had %d; reload and retry", e.Current, e.Given)
}

func (e *ConflictError) Unwrap() error { return ErrConflict }

// ErrorDetails is the API error's details: {"current_version": N}.
func (e *ConflictError) ErrorDetails() any { return map[string]int64{"current_version": e.Current} }

// Release is an immutable published snapshot of a namespace.
type Release struct {
	ID      int64  `json:"id"`
	NSID    int64  `json:"ns_id"`
	Version int64  `json:"version"`
	Kind    string `json:"kind"`
	Comment string `json:"comment"`
	Author  string `json:"author"`
	// BaseID is the release that was current when this one was made; for a
	// rollback, the release it restores.
	BaseID    int64    `json:"base_id"`
	CreatedAt int64    `json:"created_at"`
	Snapshot  Snapshot `json:"-"`
	// Items is the snapshot for API output (secrets masked).
	Items []SnapItem `json:"items,omitempty"`
	// Changes is the diff against the previous release.
	Changes []Change `json:"changes,omitempty"`
}

// PublishRequest asks for a release of the draft.
type PublishRequest struct {
	Comment string `json:"comment"`
	// Emergency bypasses a required approval where the environment allows
	// it; it is audited as an emergency publish.
	Emergency bool `json:"emergency,omitempty"`
	// Version, when set, must equal the draft version (what the publisher reviewed).
	Version *int64 `json:"version,omitempty"`
}

// RollbackRequest names the release to return to (0: the previous one).
type RollbackRequest struct {
	To      int64  `json:"to,omitempty"`
	Comment string `json:"comment,omitempty"`
}

// ReleaseRequest is a request for approval of a release.
type ReleaseRequest struct {
	ID            int64    `json:"id"`
	NSID          int64    `json:"ns_id"`
	RequestedBy   string   `json:"requested_by"`
	Comment       string   `json:"comment"`
	BaseReleaseID int64    `json:"base_release_id"`
	Status        string   `json:"status"` // pending, approved, rejected, cancelled
	Reviewer      string   `json:"reviewer,omitempty"`
	ReviewComment string   `json:"review_comment,omitempty"`
	ReleaseID     int64    `json:"release_id,omitempty"`
	CreatedAt     int64    `json:"created_at"`
	DecidedAt     int64    `json:"decided_at,omitempty"`
	Changes       []Change `json:"changes"`
	Snapshot      Snapshot `json:"-"`
}

// Decision is an approve/reject/cancel call.
type Decision struct {
	Comment string `json:"comment,omitempty"`
}

// Gray is a namespace's gray branch: changes on top of the main release,
// seen only by clients its rules select. It works for every format: for
// yaml, json and text namespaces the overlay replaces the whole document.
type Gray struct {
	Overlay   Overlay `json:"overlay"`
	Rules     Rules   `json:"rules"`
	Published *struct {
		Overlay   Overlay `json:"overlay"`
		Rules     Rules   `json:"rules"`
		ReleaseID int64   `json:"release_id"`
	} `json:"published,omitempty"`
	UpdatedBy string `json:"updated_by"`
	UpdatedAt int64  `json:"updated_at"`
	// Changes is what the draft overlay changes against the main release.
	Changes []Change `json:"changes"`
}

// GrayEdit changes a gray branch's draft: items to set or delete in gray,
// keys to drop from the overlay (back to the main value), and the rules.
type GrayEdit struct {
	Set    []Item   `json:"set,omitempty"`
	Delete []string `json:"delete,omitempty"`
	Unset  []string `json:"unset,omitempty"`
	Rules  *Rules   `json:"rules,omitempty"`
}

// Payload is what a client receives for one namespace: the values in
// force for it (main release, or gray when selected, over a public
// namespace it is linked to), with secrets in plaintext.
type Payload struct {
	Env     string `json:"env"`
	App     string `json:"app"`
	Cluster string `json:"cluster"` // the cluster that served it (may be "default")
	NS      string `json:"ns"`
	Format  Format `json:"format"`
	// ReleaseKey identifies exactly what was served; a client sends it
	// back to get 304 Not Modified when nothing changed.
	ReleaseKey string `json:"release_key"`
	// NotificationID is the id to watch from.
	NotificationID int64             `json:"notification_id"`
	Gray           bool              `json:"gray,omitempty"`
	Items          map[string]string `json:"items"`
}

// Content returns the document of a yaml/json/text namespace.
func (c *Payload) Content() string { return c.Items[ContentKey] }

// Instance is a client instance and the release it last fetched.
type Instance struct {
	Instance  string `json:"instance"`
	IP        string `json:"ip"`
	Labels    string `json:"labels,omitempty"`
	ReleaseID int64  `json:"release_id"`
	Gray      bool   `json:"gray"`
	LastSeen  int64  `json:"last_seen"`
	// Online: it fetched or watched the namespace recently (within two
	// watch holds); a client that left is listed, offline, for a week.
	Online bool `json:"online"`
}

// Notification is a namespace and the notification id a client holds (or,
// in an answer, the current one).
type Notification struct {
	NS string `json:"ns"`
	ID int64  `json:"id"`
	// Config is, in an answer to a watch that asked for content, what the
	// watching client sees of the namespace at ID (gray rules applied,
	// secrets masked unless the caller may read them): the client needs no
	// fetch. Absent when the server could not load it; the client fetches.
	Config *Payload `json:"config,omitempty"`
}

// WatchRequest is a client's long poll.
type WatchRequest struct {
	Env        string         `json:"env"`
	App        string         `json:"app"`
	Cluster    string         `json:"cluster"`
	Namespaces []Notification `json:"namespaces"`
	// Instance is the watching client's instance ID (as on its fetches): a
	// client that keeps watching is shown online though it fetches only
	// when something changes.
	Instance string `json:"instance,omitempty"`
	// Content asks for each changed namespace's configuration in the answer
	// (Notification.Config), so that a change takes one round trip.
	Content bool `json:"content,omitempty"`
	// IP and Labels identify the client to gray-release rules, as on a
	// fetch; IP defaults to the connection's address.
	IP     string   `json:"ip,omitempty"`
	Labels []string `json:"labels,omitempty"`
}

// Release kinds.
const (
	KindNormal    = "normal"
	KindEmergency = "emergency"
	KindRollback  = "rollback"
	KindGray      = "gray"
	KindPromote   = "gray-promote"
	KindApproved  = "approved"
)

// Request statuses.
const (
	StatusPending   = "pending"
	StatusApproved  = "approved"
	StatusRejected  = "rejected"
	StatusCancelled = "cancelled"
)
