package config

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"sort"
	"strings"

	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/internal/ident"
)

// Sentinel errors of the config center. Errors returned by the Service
// wrap one of these; the HTTP layer maps them onto status codes.
var (
	ErrNotFound         = errcode.New(errcode.NotFound, "config: not found")
	ErrExists           = errcode.New(errcode.AlreadyExists, "config: already exists")
	ErrInvalid          = errcode.New(errcode.BadRequest, "config: invalid")
	ErrConflict         = errcode.New(errcode.Conflict, "config: version conflict")
	ErrApprovalRequired = errcode.New(errcode.ApprovalRequired, "config: approval required")
	ErrForbidden        = errcode.New(errcode.Forbidden, "config: not allowed")
	ErrTooLarge         = errcode.New(errcode.TooLarge, "config: value too large")
)

// MaxValueBytes is the default limit of one item's value.
const MaxValueBytes = 1 << 20

// Defaults for names.
const (
	DefaultCluster   = "default"
	DefaultNamespace = "application"
)

// DefaultEnvs returns the environments a server creates on first start.
func DefaultEnvs() []string { return []string{"dev", "test", "prod"} }

// Masked replaces secret values in management output.
const Masked = "******"

// ValidName checks an env, app, cluster or namespace name.
func ValidName(kind, s string) error {
	if !ident.Name(s, 64, "._-") {
		return fmt.Errorf("%w: %s name %q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", ErrInvalid, kind, s)
	}
	return nil
}

// ValidKey checks an item key.
func ValidKey(s string) error {
	if !ident.Chars(s, 1, 191, "._-/[]@$") {
		return fmt.Errorf("%w: key %q must be 1-191 characters of letters, digits and . _ - / [ ] @ $", ErrInvalid, s)
	}
	return nil
}

// Coord names a namespace: env / app / cluster / ns.
type Coord struct {
	Env     string `json:"env"`
	App     string `json:"app"`
	Cluster string `json:"cluster"`
	NS      string `json:"ns"`
}

func (c Coord) String() string { return c.Env + "/" + c.App + "/" + c.Cluster + "/" + c.NS }

// MessageKey is the release-message key of a namespace.
func (c Coord) MessageKey() string { return c.Env + "|" + c.App + "|" + c.Cluster + "|" + c.NS }

// Validate checks every part.
func (c Coord) Validate() error {
	for _, p := range [][2]string{{"env", c.Env}, {"app", c.App}, {"cluster", c.Cluster}, {"namespace", c.NS}} {
		if err := ValidName(p[0], p[1]); err != nil {
			return err
		}
	}
	return nil
}

// Item is one key/value of a namespace.
type Item struct {
	Key       string `json:"key"`
	Value     string `json:"value"`
	Secret    bool   `json:"secret,omitempty"`
	Comment   string `json:"comment,omitempty"`
	UpdatedBy string `json:"updated_by,omitempty"`
	UpdatedAt int64  `json:"updated_at,omitempty"`
}

// Snapshot is the full, immutable content of a release: items sorted by key.
// Secret values are stored encrypted inside it.
type Snapshot []SnapItem

// SnapItem is one item of a snapshot.
type SnapItem struct {
	Key    string `json:"k"`
	Value  string `json:"v"`
	Secret bool   `json:"s,omitempty"`
}

// Sorted sorts s by key in place and returns it.
func (s Snapshot) Sorted() Snapshot {
	sort.Slice(s, func(i, j int) bool { return s[i].Key < s[j].Key })
	return s
}

func (s Snapshot) index() map[string]SnapItem {
	m := make(map[string]SnapItem, len(s))
	for _, it := range s {
		m[it.Key] = it
	}
	return m
}

// Get returns the item with key.
func (s Snapshot) Get(key string) (SnapItem, bool) {
	i := sort.Search(len(s), func(i int) bool { return s[i].Key >= key })
	if i < len(s) && s[i].Key == key {
		return s[i], true
	}
	return SnapItem{}, false
}

// Change is one difference between two snapshots.
type Change struct {
	Key    string `json:"key"`
	Op     string `json:"op"` // added, modified, deleted
	Old    string `json:"old,omitempty"`
	New    string `json:"new,omitempty"`
	Secret bool   `json:"secret,omitempty"`
}

// Diff lists what changes from a to b, with secret values masked.
func Diff(a, b Snapshot) []Change {
	am, bm := a.index(), b.index()
	var out []Change
	for _, it := range b {
		old, ok := am[it.Key]
		mask := func(v string, secret bool) string {
			if secret {
				return Masked
			}
			return v
		}
		switch {
		case !ok:
			out = append(out, Change{Key: it.Key, Op: "added", New: mask(it.Value, it.Secret), Secret: it.Secret})
		case old.Value != it.Value || old.Secret != it.Secret:
			out = append(out, Change{Key: it.Key, Op: "modified", Old: mask(old.Value, old.Secret), New: mask(it.Value, it.Secret), Secret: it.Secret || old.Secret})
		}
	}
	for _, it := range a {
		if _, ok := bm[it.Key]; !ok {
			v := it.Value
			if it.Secret {
				v = Masked
			}
			out = append(out, Change{Key: it.Key, Op: "deleted", Old: v, Secret: it.Secret})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Overlay is a gray branch's changes on top of the main release.
type Overlay struct {
	Set    []SnapItem `json:"set,omitempty"`
	Delete []string   `json:"delete,omitempty"`
}

// Apply returns base with the overlay's changes.
func (o Overlay) Apply(base Snapshot) Snapshot {
	m := base.index()
	for _, k := range o.Delete {
		delete(m, k)
	}
	for _, it := range o.Set {
		m[it.Key] = it
	}
	out := make(Snapshot, 0, len(m))
	for _, it := range m {
		out = append(out, it)
	}
	return out.Sorted()
}

// Empty reports whether the overlay changes nothing.
func (o Overlay) Empty() bool { return len(o.Set) == 0 && len(o.Delete) == 0 }

// Put sets key it.Key to it, replacing an earlier set or delete of the key.
func (o *Overlay) Put(it SnapItem) {
	o.Forget(it.Key)
	o.Set = append(o.Set, it)
	sort.Slice(o.Set, func(i, j int) bool { return o.Set[i].Key < o.Set[j].Key })
}

// Remove records the deletion of key.
func (o *Overlay) Remove(key string) {
	o.Forget(key)
	o.Delete = append(o.Delete, key)
	sort.Strings(o.Delete)
}

// Forget drops any change to key from the overlay.
func (o *Overlay) Forget(key string) {
	s := o.Set[:0]
	for _, it := range o.Set {
		if it.Key != key {
			s = append(s, it)
		}
	}
	o.Set = s
	d := o.Delete[:0]
	for _, k := range o.Delete {
		if k != key {
			d = append(d, k)
		}
	}
	o.Delete = d
}

// Rules select the clients that see a gray release. A client matches when
// any rule matches it: its IP (or a CIDR containing it), one of its labels,
// its instance id, or a stable percentage of instance ids.
type Rules struct {
	IPs       []string `json:"ips,omitempty"`
	Labels    []string `json:"labels,omitempty"`
	Instances []string `json:"instances,omitempty"`
	Percent   int      `json:"percent,omitempty"`
}

// Validate checks IPs/CIDRs and the percentage.
func (r Rules) Validate() error {
	for _, ip := range r.IPs {
		if strings.Contains(ip, "/") {
			if _, err := netip.ParsePrefix(ip); err != nil {
				return fmt.Errorf("%w: gray rule CIDR %q: %v", ErrInvalid, ip, err)
			}
		} else if _, err := netip.ParseAddr(ip); err != nil {
			return fmt.Errorf("%w: gray rule IP %q: %v", ErrInvalid, ip, err)
		}
	}
	if r.Percent < 0 || r.Percent > 100 {
		return fmt.Errorf("%w: gray percentage %d must be 0-100", ErrInvalid, r.Percent)
	}
	for _, l := range r.Labels {
		if l == "" {
			return fmt.Errorf("%w: empty gray label", ErrInvalid)
		}
	}
	return nil
}

// Peer describes a config client as gray rules see it.
type Peer struct {
	Instance string
	IP       string
	Labels   []string
}

// Match reports whether the rules select client c for namespace coord.
func (r Rules) Match(coord Coord, c Peer) bool {
	if c.IP != "" {
		addr, err := netip.ParseAddr(c.IP)
		for _, ip := range r.IPs {
			if ip == c.IP {
				return true
			}
			if err == nil && strings.Contains(ip, "/") {
				if p, perr := netip.ParsePrefix(ip); perr == nil && p.Contains(addr) {
					return true
				}
			}
		}
	}
	for _, want := range r.Labels {
		for _, l := range c.Labels {
			if l == want {
				return true
			}
		}
	}
	if c.Instance != "" {
		for _, id := range r.Instances {
			if id == c.Instance {
				return true
			}
		}
		if r.Percent > 0 && Bucket(coord, c.Instance) < r.Percent {
			return true
		}
	}
	return false
}

// Bucket places an instance id in 0..99, stably per namespace, so a
// percentage rule keeps selecting the same clients as it grows.
func Bucket(coord Coord, instance string) int {
	h := fnv.New32a()
	h.Write([]byte(coord.Env + "/" + coord.App + "/" + coord.NS + "#" + instance))
	return int(h.Sum32() % 100)
}

// DescribeReleaseKey renders a payload's release key ("main.gray.link.
// linkGray" release IDs) in the one form releases are shown everywhere:
// "release #4", "release #4 + gray #7", "release #4 + public #2".
func DescribeReleaseKey(key string) string {
	parts := strings.Split(key, ".")
	if len(parts) != 4 {
		return "release " + key
	}
	out := "release #" + parts[0]
	for i, label := range []string{"", "gray", "public", "public gray"} {
		if i > 0 && parts[i] != "0" && parts[i] != "" {
			out += " + " + label + " #" + parts[i]
		}
	}
	return out
}
