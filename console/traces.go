package console

import (
	"encoding/hex"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/trace/rollup"
	"github.com/tangram-dev/tangram/trace/store"
)

// The tracing pages draw with SVG built here — geometry computed in Go,
// written by the templates as attributes — so they need no script and no
// inline style (the console's CSP allows neither).

func (c *Console) registerTraces(mux *http.ServeMux) {
	if c.cfg.Traces == nil {
		return
	}
	mux.Handle("GET /traces", c.page(c.tracesPage))
	mux.Handle("GET /traces/map", c.page(c.traceMapPage))
	mux.Handle("GET /traces/metrics", c.page(c.metricsPage))
	mux.Handle("GET /traces/metrics/{name}", c.page(c.metricPage))
	mux.Handle("GET /traces/services/{service}", c.page(c.traceServicePage))
	mux.Handle("GET /traces/{id}", c.page(c.tracePage))
}

// redRow is a service's, an operation's or an edge's figures, formatted.
type redRow struct {
	Name, Kind, From, To          string
	Calls                         uint64
	PerMin, Errors, P50, P95, P99 string
	Failing                       bool
}

func redOf(st *rollup.Stats, minutes int) redRow {
	r := redRow{Calls: st.Calls}
	if st.Calls == 0 {
		return r
	}
	ratio := float64(st.Errors) / float64(st.Calls)
	r.PerMin = strconv.FormatFloat(float64(st.Calls)/float64(minutes), 'f', 1, 64)
	r.Errors = strconv.FormatFloat(100*ratio, 'f', 1, 64) + "%"
	r.Failing = ratio >= 0.05
	r.P50, r.P95, r.P99 = msText(st.Hist.Quantile(0.5)), msText(st.Hist.Quantile(0.95)), msText(st.Hist.Quantile(0.99))
	return r
}

func msText(nanos float64) string {
	ms := nanos / 1e6
	switch {
	case ms >= 100:
		return strconv.FormatFloat(ms, 'f', 0, 64) + " ms"
	case ms >= 1:
		return strconv.FormatFloat(ms, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(ms, 'f', 3, 64) + " ms"
}

var spanKinds = map[store.Kind]string{store.KindInternal: "internal", store.KindServer: "server", store.KindClient: "client",
	store.KindProducer: "producer", store.KindConsumer: "consumer"}

// tracesPage: every service's figures over 15 minutes, and a search.
func (c *Console) tracesPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	const minutes = 15
	roll := c.cfg.Traces.Rollup()
	var services []redRow
	for _, s := range roll.Services(minutes) {
		row := redOf(&s.Stats, minutes)
		row.Name = s.Service
		services = append(services, row)
	}
	q := r.URL.Query()
	data := map[string]any{"Services": services, "Minutes": minutes, "Q": q, "Counts": c.cfg.Traces.Counts(), "Alerts": c.cfg.Traces.Alerts()}
	if q.Get("service") != "" || q.Get("operation") != "" || q.Get("min") != "" || q.Get("errors") != "" {
		sq := store.Query{Service: q.Get("service"), Operation: q.Get("operation"), OnlyErrors: q.Get("errors") == "on", Limit: 50}
		if v := q.Get("min"); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d < 0 {
				return api.BadRequest("minimum duration %q: want a duration such as 250ms", v)
			}
			sq.MinDuration = d
		}
		found, err := c.cfg.Traces.Store().Search(sq)
		if err != nil {
			return err
		}
		type match struct {
			ID, Service, Name, Start, Duration string
			Failed                             bool
		}
		var out []match
		for _, m := range found {
			out = append(out, match{ID: hex.EncodeToString(m.TraceID[:]), Service: m.Service, Name: m.Name,
				Start:    time.Unix(0, int64(m.StartUnixNano)).UTC().Format("2006-01-02 15:04:05.000"),
				Duration: msText(float64(m.DurationNano)), Failed: m.Status == store.StatusError})
		}
		data["Found"], data["Searched"] = out, true
	}
	c.render(w, r, "traces", "Traces", data)
	return nil
}

// waterfallRow is one span of the waterfall: its bar (in a 1000-wide
// box), its indentation, its events (the logs recorded with it) and its
// attributes.
type waterfallRow struct {
	SpanID, Service, Name, Kind, Offset, Duration, Status string
	Depth, Indent                                         int
	X, W                                                  float64
	Failed                                                bool
	Events                                                []waterfallEvent
	Attrs                                                 []string
	Links                                                 []string
}

type waterfallEvent struct {
	At, Name, Text string
	at             uint64 // for ordering
}

// logEvent is a log record as a line of the waterfall: its time after
// the span's start (or as a time of day when start is 0), its severity
// and body, and its attributes.
func logEvent(l *store.Span, start uint64) waterfallEvent {
	ev := waterfallEvent{Name: l.StatusMessage, Text: l.Name, at: l.StartUnixNano}
	if ev.Name == "" {
		ev.Name = "log"
	}
	if start == 0 {
		ev.At = time.Unix(0, int64(l.StartUnixNano)).UTC().Format("15:04:05.000")
	} else {
		ev.At = "+" + msText(float64(l.StartUnixNano-min(l.StartUnixNano, start)))
	}
	for _, a := range l.Attrs {
		if a.Key != "log.severity_number" {
			ev.Text += " " + a.Key + "=" + a.Value.Text()
		}
	}
	return ev
}

func (c *Console) tracePage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	id, ok := store.ParseTraceID(r.PathValue("id"))
	if !ok {
		return api.BadRequest("trace ID %q: want 32 hex digits", r.PathValue("id"))
	}
	records, err := c.cfg.Traces.Store().Trace(id)
	if err != nil {
		return err
	}
	if len(records) == 0 {
		return api.NotFound("no trace %s", r.PathValue("id"))
	}
	// Log records go inline under the span they were written in; those
	// of no span of the trace are listed apart.
	var spans []store.Span
	logs := map[store.SpanID][]store.Span{}
	for _, rec := range records {
		if rec.Kind == store.KindLog {
			logs[rec.SpanID] = append(logs[rec.SpanID], rec)
		} else {
			spans = append(spans, rec)
		}
	}
	rows := waterfall(spans, logs)
	for _, s := range spans {
		delete(logs, s.SpanID)
	}
	var loose []waterfallEvent
	for _, ls := range logs {
		for _, l := range ls {
			loose = append(loose, logEvent(&l, 0))
		}
	}
	sort.Slice(loose, func(i, j int) bool { return loose[i].at < loose[j].at })
	nSpans := len(spans)
	if nSpans == 0 {
		spans = records // only logs: their times frame the page
	}
	var total uint64
	t0 := spans[0].StartUnixNano
	for _, s := range spans {
		if e := s.StartUnixNano + s.DurationNano - t0; e > total {
			total = e
		}
	}
	services := map[string]bool{}
	for _, s := range spans {
		services[s.Service] = true
	}
	c.render(w, r, "trace", "Trace "+r.PathValue("id"), map[string]any{"ID": r.PathValue("id"), "Rows": rows, "Logs": loose,
		"Spans": nSpans, "Services": len(services), "Total": msText(float64(total)),
		"Start": time.Unix(0, int64(t0)).UTC().Format("2006-01-02 15:04:05.000")})
	return nil
}

// waterfall orders a trace's spans as a tree (children under their
// parent, by start time; spans whose parent is missing at the top) with
// bars scaled to the trace's extent.
func waterfall(spans []store.Span, logs map[store.SpanID][]store.Span) []waterfallRow {
	if len(spans) == 0 {
		return nil
	}
	t0, end := spans[0].StartUnixNano, uint64(0)
	byID := map[store.SpanID]bool{}
	for _, s := range spans {
		t0 = min(t0, s.StartUnixNano)
		byID[s.SpanID] = true
	}
	for _, s := range spans {
		end = max(end, s.StartUnixNano+s.DurationNano)
	}
	extent := float64(max(end-t0, 1))
	children := map[store.SpanID][]int{}
	var roots []int
	for i, s := range spans {
		if s.ParentID == (store.SpanID{}) || !byID[s.ParentID] || s.ParentID == s.SpanID {
			roots = append(roots, i)
		} else {
			children[s.ParentID] = append(children[s.ParentID], i)
		}
	}
	byStart := func(ix []int) {
		sort.SliceStable(ix, func(a, b int) bool { return spans[ix[a]].StartUnixNano < spans[ix[b]].StartUnixNano })
	}
	var rows []waterfallRow
	seen := map[int]bool{}
	var walk func(i, depth int)
	walk = func(i, depth int) {
		if seen[i] || len(rows) > 5000 {
			return
		}
		seen[i] = true
		s := &spans[i]
		row := waterfallRow{SpanID: hex.EncodeToString(s.SpanID[:]), Service: s.Service, Name: s.Name, Kind: spanKinds[s.Kind],
			Offset: msText(float64(s.StartUnixNano - t0)), Duration: msText(float64(s.DurationNano)), Depth: depth, Indent: min(depth, 12),
			X: 1000 * float64(s.StartUnixNano-t0) / extent, Failed: s.Status == store.StatusError}
		row.W = math.Max(1000*float64(s.DurationNano)/extent, 2)
		if row.X+row.W > 1000 {
			row.W = 1000 - row.X
		}
		if row.Failed {
			row.Status = "error"
			if s.StatusMessage != "" {
				row.Status += ": " + s.StatusMessage
			}
		}
		for _, e := range s.Events {
			ev := waterfallEvent{At: "+" + msText(float64(e.TimeUnixNano-min(e.TimeUnixNano, s.StartUnixNano))), Name: e.Name, at: e.TimeUnixNano}
			var parts []string
			for _, a := range e.Attrs {
				if a.Key == "log.message" {
					ev.Text = a.Value.Text() + " " + ev.Text
					continue
				}
				parts = append(parts, a.Key+"="+a.Value.Text())
			}
			ev.Text = strings.TrimSpace(ev.Text + " " + strings.Join(parts, " "))
			row.Events = append(row.Events, ev)
		}
		for _, l := range logs[s.SpanID] {
			row.Events = append(row.Events, logEvent(&l, s.StartUnixNano))
		}
		sort.SliceStable(row.Events, func(a, b int) bool { return row.Events[a].at < row.Events[b].at })
		for _, a := range s.Attrs {
			row.Attrs = append(row.Attrs, a.Key+"="+a.Value.Text())
		}
		for _, l := range s.Links {
			row.Links = append(row.Links, hex.EncodeToString(l.TraceID[:])+"/"+hex.EncodeToString(l.SpanID[:]))
		}
		rows = append(rows, row)
		kids := children[s.SpanID]
		byStart(kids)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	byStart(roots)
	for _, i := range roots {
		walk(i, 0)
	}
	return rows
}

// traceServicePage: a service's dashboard — calls, errors and latency
// percentiles minute by minute over the window, and its operations.
func (c *Console) traceServicePage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	svc := r.PathValue("service")
	roll := c.cfg.Traces.Rollup()
	pts := roll.Series(svc, "", roll.Window())
	calls := rollupChart("Calls per minute", pts, "", rollupLine{"line-calls", "calls", func(s *rollup.Stats) float64 { return float64(s.Calls) }})
	errs := rollupChart("Errors per minute", pts, "", rollupLine{"line-errors", "errors", func(s *rollup.Stats) float64 { return float64(s.Errors) }})
	lat := rollupChart("Latency (ms)", pts, " ms",
		rollupLine{"line-p50", "p50", func(s *rollup.Stats) float64 { return s.Hist.Quantile(0.5) / 1e6 }},
		rollupLine{"line-p95", "p95", func(s *rollup.Stats) float64 { return s.Hist.Quantile(0.95) / 1e6 }},
		rollupLine{"line-p99", "p99", func(s *rollup.Stats) float64 { return s.Hist.Quantile(0.99) / 1e6 }})
	var ops []redRow
	for _, o := range roll.Operations(svc, 15) {
		row := redOf(&o.Stats, 15)
		row.Name, row.Kind = o.Operation, spanKinds[o.Kind]
		ops = append(ops, row)
	}
	c.render(w, r, "traceservice", "Service "+svc, map[string]any{"Service": svc, "Charts": []chart{calls, errs, lat}, "Ops": ops,
		"Minutes": roll.Window()})
	return nil
}

// mapNode and mapEdge are the dependency graph's geometry.
type mapNode struct {
	Name, Href string
	X, Y       float64
	Failing    bool
}

type mapEdge struct {
	X1, Y1, X2, Y2, LX, LY float64
	Label                  string
	Failing                bool
}

// traceMapPage: the services and the calls between them, laid out in
// columns by their distance from the entry services.
func (c *Console) traceMapPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	const minutes = 15
	roll := c.cfg.Traces.Rollup()
	deps := roll.Dependencies(minutes)
	services := roll.Services(minutes)
	nodes, edges, width, height := layoutMap(services, deps, minutes)
	var rows []redRow
	for _, d := range deps {
		row := redOf(&d.Stats, minutes)
		row.From, row.To = d.From, d.To
		rows = append(rows, row)
	}
	c.render(w, r, "tracemap", "Service map", map[string]any{"Nodes": nodes, "Edges": edges, "Rows": rows, "W": width, "H": height, "Minutes": minutes})
	return nil
}

// layoutMap places each service in a column: its longest chain of callers
// (cycles cut), rows in a column by name.
func layoutMap(services []rollup.Summary, deps []rollup.EdgeSummary, minutes int) ([]mapNode, []mapEdge, float64, float64) {
	names := map[string]bool{}
	failing := map[string]bool{}
	for _, s := range services {
		names[s.Service] = true
		failing[s.Service] = s.Calls > 0 && float64(s.Errors)/float64(s.Calls) >= 0.05
	}
	callers := map[string][]string{}
	for _, d := range deps {
		names[d.From], names[d.To] = true, true
		callers[d.To] = append(callers[d.To], d.From)
	}
	col := map[string]int{}
	var depth func(n string, path map[string]bool) int
	depth = func(n string, path map[string]bool) int {
		if d, ok := col[n]; ok {
			return d
		}
		path[n] = true
		d := 0
		for _, p := range callers[n] {
			if !path[p] {
				d = max(d, depth(p, path)+1)
			}
		}
		delete(path, n)
		col[n] = d
		return d
	}
	var sorted []string
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	columns := map[int][]string{}
	maxCol, maxRows := 0, 0
	for _, n := range sorted {
		d := depth(n, map[string]bool{})
		columns[d] = append(columns[d], n)
		maxCol = max(maxCol, d)
		maxRows = max(maxRows, len(columns[d]))
	}
	const colW, rowH, padX, padY = 300.0, 100.0, 90.0, 50.0
	pos := map[string][2]float64{}
	var nodes []mapNode
	for d := 0; d <= maxCol; d++ {
		for i, n := range columns[d] {
			x, y := padX+colW*float64(d), padY+rowH*float64(i)
			pos[n] = [2]float64{x, y}
			nodes = append(nodes, mapNode{Name: n, Href: "/traces/services/" + url.PathEscape(n), X: x, Y: y, Failing: failing[n]})
		}
	}
	var edges []mapEdge
	for _, d := range deps {
		a, b := pos[d.From], pos[d.To]
		// Stop short of the nodes' circles (radius 22) so the arrows show.
		dx, dy := b[0]-a[0], b[1]-a[1]
		l := math.Hypot(dx, dy)
		if l == 0 {
			continue
		}
		ux, uy := dx/l, dy/l
		r := redOf(&d.Stats, minutes)
		// The label sits at the middle, lifted off the line on its upper side.
		nx, ny := uy, -ux
		if ny > 0 {
			nx, ny = -nx, -ny
		}
		edges = append(edges, mapEdge{X1: a[0] + 24*ux, Y1: a[1] + 24*uy, X2: b[0] - 26*ux, Y2: b[1] - 26*uy,
			LX: (a[0]+b[0])/2 + 12*nx, LY: (a[1]+b[1])/2 + 12*ny, Label: r.PerMin + "/min · " + r.Errors + " err · p99 " + r.P99, Failing: r.Failing})
	}
	return nodes, edges, padX*2 + colW*float64(maxCol), padY*2 + rowH*float64(max(maxRows-1, 0))
}
