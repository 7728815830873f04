package server

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/config"

	"golang.org/x/sync/singleflight"

	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/store"
)

// served is one namespace as fetches see it, loaded from the store once
// per notification id: its row, its current release and its published
// gray branch, secrets decrypted. Every change that alters what clients
// get writes a release message, which changes the notification id, so an
// entry is valid exactly while the id it was loaded under is current.
type served struct {
	ns       *config.Namespace
	main     config.Snapshot
	gray     *config.Overlay
	rules    config.Rules
	grayRel  int64
	link     *served // the public namespace this one is linked to
	loadedAt int64   // notification id read before loading
}

// view returns the snapshot a client sees of s, and the ids that made it.
func (sv *served) view(cl config.Peer) (config.Snapshot, int64, int64) {
	if sv.gray != nil && sv.rules.Match(sv.ns.Coord, cl) {
		return sv.gray.Apply(sv.main), sv.ns.ReleaseID, sv.grayRel
	}
	return sv.main, sv.ns.ReleaseID, 0
}

func (s *Server) decrypt(snap config.Snapshot) (config.Snapshot, error) {
	out := make(config.Snapshot, len(snap))
	for i, it := range snap {
		out[i] = it
		if it.Secret {
			v, err := s.cipher.Open(it.Value)
			if err != nil {
				return nil, err
			}
			out[i].Value = v
		}
	}
	return out, nil
}

// loadServed reads what fetches of c need.
func (s *Server) loadServed(ctx context.Context, c config.Coord, linked bool) (*served, error) {
	ns, err := s.resolve(ctx, c)
	if err != nil {
		return nil, err
	}
	sv := &served{ns: ns}
	main, err := s.currentSnapshot(ctx, s.st, ns)
	if err != nil {
		return nil, err
	}
	if sv.main, err = s.decrypt(main); err != nil {
		return nil, err
	}
	g, err := s.loadGray(ctx, s.st, ns.ID)
	if err != nil {
		return nil, err
	}
	if g != nil && g.published {
		set, err := s.decrypt(g.pubOverlay.Set)
		if err != nil {
			return nil, err
		}
		sv.gray = &config.Overlay{Set: set, Delete: g.pubOverlay.Delete}
		sv.rules, sv.grayRel = g.pubRules, g.releaseID
	}
	if ns.LinkApp != "" && !linked {
		pc := config.Coord{Env: c.Env, App: ns.LinkApp, Cluster: c.Cluster, NS: c.NS}
		if sv.link, err = s.loadServed(ctx, pc, true); err != nil {
			return nil, fmt.Errorf("config: linked public namespace: %w", err)
		}
	}
	return sv, nil
}

// servedCache holds one served entry per namespace coordinate.
type servedCache struct {
	mu sync.Mutex
	m  map[config.Coord]*served
	sf singleflight.Group
}

// servedFor returns the entry for c loaded under notification id nid, loading it
// once however many fetches ask at the same moment (after a release, every
// client of the namespace does).
func (s *Server) servedFor(ctx context.Context, c config.Coord, nid int64) (*served, error) {
	sc := &s.served
	sc.mu.Lock()
	sv := sc.m[c]
	sc.mu.Unlock()
	if sv != nil && sv.loadedAt == nid {
		s.metrics.fetches.WithLabelValues("hit").Inc()
		return sv, nil
	}
	s.metrics.fetches.WithLabelValues("miss").Inc()
	v, err, _ := sc.sf.Do(c.String()+"#"+strconv.FormatInt(nid, 10), func() (any, error) {
		sv, err := s.loadServed(context.WithoutCancel(ctx), c, false)
		if err != nil {
			return nil, err
		}
		sv.loadedAt = nid
		sc.mu.Lock()
		if sc.m == nil || len(sc.m) >= 10_000 {
			sc.m = map[config.Coord]*served{} // bounded: clients may name any cluster
		}
		if old := sc.m[c]; old == nil || old.loadedAt <= nid {
			sc.m[c] = sv
		}
		sc.mu.Unlock()
		return sv, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*served), nil
}

// resolve finds the namespace row serving c: the named cluster's when it
// has been released (or has a gray branch), else the default cluster's.
func (s *Server) resolve(ctx context.Context, c config.Coord) (*config.Namespace, error) {
	ns, err := s.loadNS(ctx, s.st, c)
	if err == nil && (ns.ReleaseID != 0 || c.Cluster == config.DefaultCluster) {
		return ns, nil
	}
	if err != nil && !errors.Is(err, config.ErrNotFound) {
		return nil, err
	}
	if c.Cluster == config.DefaultCluster {
		return nil, err
	}
	d := c
	d.Cluster = config.DefaultCluster
	dns, derr := s.loadNS(ctx, s.st, d)
	if derr != nil {
		if ns != nil {
			return ns, nil
		}
		return nil, err
	}
	return dns, nil
}

// Fetch returns the configuration a client sees for one namespace and
// records which release the client instance holds. Secret values come in
// clear only when secrets is set (the caller holds the secrets
// permission); otherwise they are masked.
func (s *Server) Fetch(ctx context.Context, c config.Coord, cl config.Peer, secrets bool) (*config.Payload, error) {
	if c.Cluster == "" {
		c.Cluster = config.DefaultCluster
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// Read the notification id before the release: a release landing in
	// between makes the id stale, so the next watch returns at once.
	nid := s.hub.current([][]string{watchKeys(c.Env, c.App, c.Cluster, c.NS)})[0]
	sv, err := s.servedFor(ctx, c, nid)
	if err != nil {
		return nil, err
	}
	out := sv.payload(c, nid, cl, secrets)
	gray, _ := sv.viewKey(cl)
	s.noteServed(sv, cl, gray)
	return out, nil
}

// payload is what client cl sees of c (served by sv) at notification id nid.
func (sv *served) payload(c config.Coord, nid int64, cl config.Peer, secrets bool) *config.Payload {
	snap, mainID, grayID := sv.view(cl)
	var linkID, linkGray int64
	if sv.link != nil {
		var psnap config.Snapshot
		psnap, linkID, linkGray = sv.link.view(cl)
		snap = mergeLinked(psnap, snap)
	}
	ns := sv.ns
	out := &config.Payload{Env: c.Env, App: c.App, Cluster: ns.Cluster, NS: c.NS, Format: ns.Format, NotificationID: nid,
		Gray: grayID != 0 || linkGray != 0, Items: make(map[string]string, len(snap)),
		ReleaseKey: fmt.Sprintf("%d.%d.%d.%d", mainID, grayID, linkID, linkGray)}
	for _, it := range snap {
		if it.Secret && !secrets {
			it.Value = config.Masked
		}
		out.Items[it.Key] = it.Value
	}
	return out
}

// viewKey identifies which of sv's payloads client cl gets: which gray
// branches (its own, its linked public namespace's) select it.
func (sv *served) viewKey(cl config.Peer) (gray, linkGray bool) {
	gray = sv.gray != nil && sv.rules.Match(sv.ns.Coord, cl)
	if l := sv.link; l != nil {
		linkGray = l.gray != nil && l.rules.Match(l.ns.Coord, cl)
	}
	return gray, linkGray
}

// noteServed records which release client instance cl now holds.
func (s *Server) noteServed(sv *served, cl config.Peer, gray bool) {
	if cl.Instance == "" {
		return
	}
	s.instances.note(sv.ns.ID, config.Instance{Instance: cl.Instance, IP: cl.IP, Labels: strings.Join(cl.Labels, ","),
		ReleaseID: sv.ns.ReleaseID, Gray: gray, LastSeen: store.NowMillis()})
}

// mergeLinked overlays an app's own items on a public namespace's.
func mergeLinked(public, own config.Snapshot) config.Snapshot {
	o := config.Overlay{Set: own}
	return o.Apply(public)
}

// Instances lists the clients that fetched a namespace, most recent first.
func (s *Server) Instances(ctx context.Context, c config.Coord) ([]config.Instance, error) {
	ns, err := s.Namespace(ctx, c)
	if err != nil {
		return nil, err
	}
	rows, err := s.st.QueryContext(ctx, `SELECT instance, ip, labels, release_id, gray, last_seen FROM config_instances WHERE ns_id = ? ORDER BY last_seen DESC LIMIT 1000`, ns.ID)
	if err != nil {
		return nil, fmt.Errorf("config: list instances: %w", err)
	}
	defer rows.Close()
	byID := map[string]config.Instance{}
	for rows.Next() {
		var in config.Instance
		var g int
		if err := rows.Scan(&in.Instance, &in.IP, &in.Labels, &in.ReleaseID, &g, &in.LastSeen); err != nil {
			return nil, err
		}
		in.Gray = g != 0
		byID[in.Instance] = in
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	// Fetches on this server not yet flushed to the store.
	for _, in := range s.instances.pending(ns.ID) {
		byID[in.Instance] = in
	}
	out := make([]config.Instance, 0, len(byID))
	for _, in := range byID {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LastSeen > out[j].LastSeen })
	// A watching client is seen at least every watch hold (MaxHold), and
	// its sightings are written every InstanceFlushInterval.
	cut := store.NowMillis() - (2*s.cfg.MaxHold + 2*InstanceFlushInterval).Milliseconds()
	for i := range out {
		out[i].Online = out[i].LastSeen >= cut
	}
	return out, nil
}

// instanceLog collects which release each client instance fetched and
// writes them to the store in one transaction per flush, so that a release
// fetched by 10,000 clients costs a few transactions rather than 10,000
// (Apollo queues its instance audits the same way).
type instanceLog struct {
	mu       sync.Mutex
	recs     map[instanceKey]config.Instance
	watching map[watchSeen]int64 // instances seen watching since the last flush → when
}

// watchSeen is a client instance watching a namespace.
type watchSeen struct {
	coord    config.Coord
	instance string
}

// watched records that instance is watching the namespaces of req.
func (l *instanceLog) watched(req config.WatchRequest) {
	if req.Instance == "" || len(req.Instance) > 128 {
		return
	}
	now := store.NowMillis()
	if req.Cluster == "" {
		req.Cluster = config.DefaultCluster
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.watching == nil {
		l.watching = map[watchSeen]int64{}
	}
	for _, n := range req.Namespaces {
		if len(l.watching) >= 200_000 {
			return
		}
		l.watching[watchSeen{config.Coord{Env: req.Env, App: req.App, Cluster: req.Cluster, NS: n.NS}, req.Instance}] = now
	}
}

type instanceKey struct {
	ns       int64
	instance string
}

func (l *instanceLog) note(ns int64, in config.Instance) {
	l.mu.Lock()
	if l.recs == nil {
		l.recs = map[instanceKey]config.Instance{}
	}
	if len(l.recs) < 200_000 { // bounded: beyond it, wait for the next flush
		l.recs[instanceKey{ns, in.Instance}] = in
	}
	l.mu.Unlock()
}

func (l *instanceLog) pending(ns int64) []config.Instance {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []config.Instance
	for k, in := range l.recs {
		if k.ns == ns {
			out = append(out, in)
		}
	}
	return out
}

func (l *instanceLog) take() (map[instanceKey]config.Instance, map[watchSeen]int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	recs, watching := l.recs, l.watching
	l.recs, l.watching = nil, nil
	return recs, watching
}

// InstanceRetention is how long a client instance that stopped fetching
// stays in the client list.
const InstanceRetention = 7 * 24 * time.Hour

// flushInstances writes the collected instance records and forgets
// instances not seen for InstanceRetention.
func (s *Server) flushInstances(ctx context.Context) error {
	recs, watching := s.instances.take()
	if err := s.flushWatching(ctx, watching); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	if _, err := s.st.ExecContext(ctx, `DELETE FROM config_instances WHERE last_seen < ?`, store.NowMillis()-InstanceRetention.Milliseconds()); err != nil {
		return err
	}
	// Replaced in chunks (one DELETE and one multi-row INSERT per 200
	// records, in one transaction): after a release every watcher of a
	// namespace is recorded at once, and a statement per record made the
	// flush cost more than the release's fan-out.
	keys := make([]instanceKey, 0, len(recs))
	for k := range recs {
		keys = append(keys, k)
	}
	const chunk = 200
	return s.st.InTx(ctx, func(tx *store.Tx) error {
		for len(keys) > 0 {
			part := keys[:min(chunk, len(keys))]
			keys = keys[len(part):]
			del := make([]any, 0, 2*len(part))
			ins := make([]any, 0, 7*len(part))
			for _, k := range part {
				in := recs[k]
				del = append(del, k.ns, k.instance)
				ins = append(ins, k.ns, k.instance, in.IP, in.Labels, in.ReleaseID, b2i(in.Gray), in.LastSeen)
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM config_instances WHERE `+strings.TrimSuffix(strings.Repeat("(ns_id = ? AND instance = ?) OR ", len(part)), " OR "), del...); err != nil {
				return fmt.Errorf("config: record client instances: %w", err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO config_instances (ns_id, instance, ip, labels, release_id, gray, last_seen) VALUES `+
				strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?), ", len(part)), ", "), ins...); err != nil {
				return fmt.Errorf("config: record client instances: %w", err)
			}
		}
		return nil
	})
}

// flushWatching moves the last-seen time of clients that are watching (and
// so fetch only on a change) forward; an instance that never fetched is not
// added: it appears with its first fetch.
func (s *Server) flushWatching(ctx context.Context, watching map[watchSeen]int64) error {
	if len(watching) == 0 {
		return nil
	}
	// One statement per namespace and chunk of instances, all in one
	// transaction: 10,000 watchers re-arming after a release are 20
	// statements, not 10,000 commits. Each chunk is stamped with the
	// earliest time seen in it, so no instance is claimed seen later than it
	// was.
	ids := map[config.Coord]int64{}
	byNS := map[int64][]watchSeen{}
	for w := range watching {
		id, ok := ids[w.coord]
		if !ok {
			ns, err := s.Namespace(ctx, w.coord)
			if err != nil && !errors.Is(err, config.ErrNotFound) {
				return err
			}
			if ns != nil {
				id = ns.ID
			}
			ids[w.coord] = id // 0: gone, nothing to mark
		}
		if id != 0 {
			byNS[id] = append(byNS[id], w)
		}
	}
	const chunk = 500
	return s.st.InTx(ctx, func(tx *store.Tx) error {
		for id, ws := range byNS {
			for len(ws) > 0 {
				part := ws[:min(chunk, len(ws))]
				ws = ws[len(part):]
				at := watching[part[0]]
				args := make([]any, 0, len(part)+3)
				args = append(args, nil, id)
				for _, w := range part {
					at = min(at, watching[w])
					args = append(args, w.instance)
				}
				args[0] = at
				args = append(args, at)
				q := `UPDATE config_instances SET last_seen = ? WHERE ns_id = ? AND instance IN (?` + strings.Repeat(", ?", len(part)-1) + `) AND last_seen < ?`
				if _, err := tx.ExecContext(ctx, q, args...); err != nil {
					return fmt.Errorf("config: mark watching instances seen: %w", err)
				}
			}
		}
		return nil
	})
}

// Export renders a namespace (its current release, or its draft) as a file
// in the given format. Properties namespaces export as .properties, or as a
// flat yaml/json mapping; document namespaces export their document. Secret
// values are exported masked unless reveal is set.
func (s *Server) Export(ctx context.Context, c config.Coord, draft, reveal bool, format config.Format) (string, error) {
	ns, err := s.Namespace(ctx, c)
	if err != nil {
		return "", err
	}
	var snap config.Snapshot
	if draft {
		items, err := s.items(ctx, s.st, ns.ID)
		if err != nil {
			return "", err
		}
		snap = snapshotOf(items)
	} else if snap, err = s.currentSnapshot(ctx, s.st, ns); err != nil {
		return "", err
	}
	kvs := make([]config.KV, 0, len(snap))
	for _, it := range snap {
		kvs = append(kvs, config.KV{Key: it.Key, Value: s.present(it.Value, it.Secret, reveal)})
	}
	if ns.Format != config.Properties {
		if len(kvs) == 0 {
			return "", nil
		}
		return kvs[0].Value, nil
	}
	if format == "" {
		format = config.Properties
	}
	return config.FlatDocument(format, kvs)
}

// Import replaces (or, with merge, updates) a namespace's draft from a
// file. A properties namespace reads .properties, or yaml/json flattened
// to dotted keys; a document namespace takes the document whole after
// validating it. Nothing is published.
func (s *Server) Import(ctx context.Context, actor string, c config.Coord, format config.Format, data string, merge bool) (int64, int, error) {
	ns, err := s.Namespace(ctx, c)
	if err != nil {
		return 0, 0, err
	}
	var set []config.Item
	if ns.Format != config.Properties {
		if err := config.Validate(ns.Format, data); err != nil {
			return 0, 0, err
		}
		set = []config.Item{{Key: config.ContentKey, Value: data}}
	} else {
		if format == "" {
			format = config.Properties
		}
		var kvs []config.KV
		switch format {
		case config.Properties:
			kvs, err = config.ParseProperties(data)
		case config.YAML, config.JSON:
			kvs, err = config.FlattenDocument(format, data)
		default:
			err = fmt.Errorf("%w: cannot import %s into a properties namespace", config.ErrInvalid, format)
		}
		if err != nil {
			return 0, 0, err
		}
		// Keep the secret flag of existing secret items.
		existing, err := s.items(ctx, s.st, ns.ID)
		if err != nil {
			return 0, 0, err
		}
		secret := map[string]bool{}
		for _, it := range existing {
			secret[it.Key] = it.Secret
		}
		for _, kv := range kvs {
			// An export without reveal masks secrets; importing it keeps
			// the stored secret (EditDraft reads the mask so), but a mask
			// where no secret is stored would become a literal value.
			if kv.Value == config.Masked && !secret[kv.Key] {
				return 0, 0, fmt.Errorf("%w: %q has the value %s, the mask an export puts in place of a secret, and %s holds no secret %q to keep: export with reveal=true, or set the value", config.ErrInvalid, kv.Key, config.Masked, c, kv.Key)
			}
			set = append(set, config.Item{Key: kv.Key, Value: kv.Value, Secret: secret[kv.Key]})
		}
	}
	v, err := s.EditDraft(ctx, actor, c, config.Edit{Set: set, Replace: !merge})
	if err == nil {
		_ = audit.Record(ctx, s.st, audit.Entry{Actor: actor, Action: "config.import", Resource: "config/" + c.String(), After: fmt.Sprintf("%d items from %s (merge=%v)", len(set), format, merge)})
	}
	return v, len(set), err
}
