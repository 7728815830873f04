package registry

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/tangram-dev/tangram/internal/errcode"
)

// Errors of the package.
var (
	ErrNotFound  = errcode.New(errcode.NotFound, "registry: not found")
	ErrInvalid   = errcode.New(errcode.BadRequest, "registry: invalid")
	ErrForbidden = errcode.New(errcode.Forbidden, "registry: forbidden")
)

// Defaults for the name parts.
const (
	DefaultNamespace = "public"
	DefaultGroup     = "default"
)

// Key names a service: namespace → group → service.
type Key struct {
	Namespace string `json:"namespace" msgpack:"namespace"`
	Group     string `json:"group" msgpack:"group"`
	Service   string `json:"service" msgpack:"service"`
}

func (k Key) String() string { return k.Namespace + "/" + k.Group + "/" + k.Service }

// Fill applies the defaults.
func (k *Key) Fill() {
	if k.Namespace == "" {
		k.Namespace = DefaultNamespace
	}
	if k.Group == "" {
		k.Group = DefaultGroup
	}
}

// validName: 1–128 letters, digits, '.', '_', ':' or '-', starting with a
// letter or digit (a loop: this runs on every registration).
func validName(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == ':' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// Validate checks the names of a key (after Fill).
func (k Key) Validate() error {
	for _, p := range []struct{ what, v string }{{"namespace", k.Namespace}, {"group", k.Group}, {"service", k.Service}} {
		if !validName(p.v) {
			return fmt.Errorf("%w %s %q: 1–128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit", ErrInvalid, p.what, p.v)
		}
	}
	return nil
}

// Instance is one registered endpoint of a service.
type Instance struct {
	Key
	// ID is unique within the service; registration is idempotent by it.
	// Default "host:port".
	ID   string `json:"id" msgpack:"id"`
	Host string `json:"host" msgpack:"host"`
	// Port and Weight are 16-bit and sit with the flags in one word: the
	// registry holds many instances (see docs/registry.md, memory).
	Port      uint16            `json:"port" msgpack:"port"`
	Weight    uint16            `json:"weight" msgpack:"weight"` // 0–10000; 0 takes no traffic
	Healthy   bool              `json:"healthy" msgpack:"healthy"`
	Enabled   bool              `json:"enabled" msgpack:"enabled"`
	Ephemeral bool              `json:"ephemeral" msgpack:"ephemeral"`
	Zone      string            `json:"zone,omitempty" msgpack:"zone,omitempty"`
	Cluster   string            `json:"cluster,omitempty" msgpack:"cluster,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty" msgpack:"metadata,omitempty"`
	// Set by the registry.
	Owner        string `json:"owner,omitempty" msgpack:"owner,omitempty"`                 // server that holds its heartbeats
	Version      int64  `json:"version,omitempty" msgpack:"version,omitempty"`             // orders updates across servers
	RegisteredAt int64  `json:"registered_at,omitempty" msgpack:"registered_at,omitempty"` // unix ms
}

// Addr is "host:port".
func (in *Instance) Addr() string { return net.JoinHostPort(in.Host, strconv.Itoa(int(in.Port))) }

// Limits on instance fields.
const (
	MaxMetadataKeys  = 64
	MaxMetadataBytes = 8 << 10
	MaxWeight        = 10000
	DefaultWeight    = 100
)

// Normalize applies defaults and validates a registration.
func (in *Instance) Normalize() error {
	in.Key.Fill()
	if err := in.Key.Validate(); err != nil {
		return err
	}
	if in.Host == "" || len(in.Host) > 253 {
		return fmt.Errorf("%w host %q: want an IP address or a DNS name of at most 253 bytes", ErrInvalid, in.Host)
	}
	if ip := net.ParseIP(in.Host); ip == nil && !validHostname(in.Host) {
		return fmt.Errorf("%w host %q: not an IP address or DNS name", ErrInvalid, in.Host)
	}
	if in.Port == 0 {
		return fmt.Errorf("%w port 0: want 1–65535", ErrInvalid)
	}
	if in.Weight > MaxWeight {
		return fmt.Errorf("%w weight %d: want 0–%d", ErrInvalid, in.Weight, MaxWeight)
	}
	if in.ID == "" {
		in.ID = in.Addr()
	}
	if len(in.ID) > 256 {
		return fmt.Errorf("%w instance id: %d bytes, at most 256", ErrInvalid, len(in.ID))
	}
	if i := strings.Index(in.ID, in.Host); i >= 0 {
		in.Host = in.ID[i : i+len(in.Host)] // "host:port" IDs: one string, not two
	}
	if len(in.Zone) > 64 || len(in.Cluster) > 64 {
		return fmt.Errorf("%w zone or cluster longer than 64 bytes", ErrInvalid)
	}
	if len(in.Metadata) > MaxMetadataKeys {
		return fmt.Errorf("%w metadata: %d keys, at most %d", ErrInvalid, len(in.Metadata), MaxMetadataKeys)
	}
	size := 0
	for k, v := range in.Metadata {
		size += len(k) + len(v)
	}
	if size > MaxMetadataBytes {
		return fmt.Errorf("%w metadata: %d bytes, at most %d", ErrInvalid, size, MaxMetadataBytes)
	}
	return nil
}

// validHostname checks a DNS name: dot-separated labels of 1–63 letters,
// digits and '-', not starting with '-'; a trailing dot is allowed.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Clone returns a deep copy.
func (in *Instance) Clone() *Instance {
	c := *in
	if in.Metadata != nil {
		c.Metadata = make(map[string]string, len(in.Metadata))
		for k, v := range in.Metadata {
			c.Metadata[k] = v
		}
	}
	return &c
}

// Event is one change to a service's instances.
type Event struct {
	Revision int64     `json:"revision" msgpack:"revision"`
	Type     string    `json:"type" msgpack:"type"` // "put" or "delete"
	Instance *Instance `json:"instance" msgpack:"instance"`
}

// Event types.
const (
	EventPut    = "put"
	EventDelete = "delete"
)

// Snapshot is a service's instances at a revision, or the changes since a
// revision a watcher already has.
type Snapshot struct {
	Key      Key   `json:"key" msgpack:"key"`
	Revision int64 `json:"revision" msgpack:"revision"`
	// Node is the server that answered: revisions are its own, so a
	// watcher resumes from one only on the same server.
	Node string `json:"node" msgpack:"node"`
	// Full is set when Instances is the complete list (first watch, or the
	// watcher's revision is older than the change log); otherwise Events
	// holds the changes after the watcher's revision.
	Full      bool        `json:"full" msgpack:"full"`
	Instances []*Instance `json:"instances,omitempty" msgpack:"instances,omitempty"`
	Events    []Event     `json:"events,omitempty" msgpack:"events,omitempty"`
	// Emptied is set on a full, empty list when the service's instances
	// were deregistered or expired here (not merely unknown to this server,
	// as after a restart): only then may a client drop its non-empty list.
	Emptied bool `json:"emptied,omitempty" msgpack:"emptied,omitempty"`

	enc *encoding // shared msgpack encoding, when many watchers get this value
}

type encoding struct {
	once sync.Once
	b    []byte
	err  error
}
