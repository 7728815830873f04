package server

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/rollup"
	"github.com/tangram-dev/tangram/trace/series"
	"github.com/tangram-dev/tangram/trace/store"
)

const apiBase = trace.APIBase

// APIRoutes documents the query API (docs/openapi.yaml).
func APIRoutes() []apidoc.Route {
	t := "trace"
	return []apidoc.Route{
		{Method: "GET", Path: apiBase + "/traces/{id}", Tag: t, Summary: "A trace's spans by start time (the ID in 32 hex digits)", Response: trace.TraceReply{}, Also: []int{404}},
		{Method: "GET", Path: apiBase + "/traces", Tag: t, Summary: "Traces with a span matching every criterion, newest first", Response: trace.SearchReply{}, Query: []apidoc.Param{
			{Name: "service", Description: "the span's service (its resource's service.name)"},
			{Name: "operation", Description: "the span's name"},
			{Name: "min_duration", Description: "at least this long (a Go duration: 250ms)"},
			{Name: "max_duration", Description: "at most this long"},
			{Name: "errors", Description: "true: spans whose status is error"},
			{Name: "start", Description: "started at or after (RFC 3339)"},
			{Name: "end", Description: "started before (RFC 3339)"},
			{Name: "attr", Description: "key=value, repeatable; compared as text"},
			{Name: "limit", Description: "traces, 1 to 1000 (default 20)", Type: "integer"},
		}},
		{Method: "GET", Path: apiBase + "/stats", Tag: t, Summary: "The collector's counters and the store's size", Response: trace.StatsReply{}},
		{Method: "GET", Path: apiBase + "/services", Tag: t, Summary: "Each service's rate, errors and latency percentiles over the last minutes (its entry spans)", Response: trace.ServicesReply{}, Query: []apidoc.Param{minutesParam}},
		{Method: "GET", Path: apiBase + "/services/{service}/operations", Tag: t, Summary: "A service's operations with their rate, errors and latency percentiles, busiest first", Response: trace.OperationsReply{}, Query: []apidoc.Param{minutesParam}},
		{Method: "GET", Path: apiBase + "/series", Tag: t, Summary: "A service's (or one operation's) figures minute by minute", Response: trace.SeriesReply{}, Query: []apidoc.Param{
			{Name: "service", Description: "the service (required)"}, {Name: "operation", Description: "one of its operations (default: the service's entry spans)"}, minutesParam}},
		{Method: "GET", Path: apiBase + "/alerts", Tag: t, Summary: "Alert rules with their state: ok, firing (since when, acknowledged by whom) or silenced", Response: trace.AlertsReply{}},
		{Method: "PUT", Path: apiBase + "/alerts/{name}", Tag: t, Summary: "Create or replace an alert rule (threshold on error ratio, latency percentile or throughput; or a burn rate)", Body: trace.AlertRule{}, Response: trace.AlertRule{}},
		{Method: "DELETE", Path: apiBase + "/alerts/{name}", Tag: t, Summary: "Delete an alert rule", Status: 204, Also: []int{404}},
		{Method: "POST", Path: apiBase + "/alerts/{name}/silence", Tag: t, Summary: "Hold an alert's notifications for a while (for: 0 lifts it)", Body: trace.SilenceRequest{}, Status: 204, Also: []int{404}},
		{Method: "POST", Path: apiBase + "/alerts/{name}/ack", Tag: t, Summary: "Acknowledge a firing alert: no reminders until it resolves", Status: 204, Also: []int{404, 409}},
		{Method: "GET", Path: apiBase + "/metrics", Tag: t, Summary: "The metric names kept (from OTLP metrics and the server's own), with the series store's counters", Response: trace.MetricsReply{}},
		{Method: "GET", Path: apiBase + "/metrics/series", Tag: t, Summary: "A metric's series minute by minute: a gauge's last value, a counter's increase", Response: trace.MetricSeriesReply{}, Query: []apidoc.Param{
			{Name: "name", Description: "the metric (required)"},
			{Name: "match", Description: "label=value, repeatable: keep the series with these labels"},
			{Name: "minutes", Description: "how many of the last minutes (default: the whole window, a day by default)", Type: "integer"}}},
		{Method: "GET", Path: apiBase + "/dependencies", Tag: t, Summary: "The service dependency map: services and the calls between them, kept as spans arrive", Response: trace.DependenciesReply{}, Query: []apidoc.Param{minutesParam}},
	}
}

var minutesParam = apidoc.Param{Name: "minutes", Description: "how many of the last minutes (default 15; at most the collector's window, 60 by default)", Type: "integer"}

// minutes reads the minutes parameter.
func (s *Server) minutes(r *http.Request) (int, error) {
	v := r.URL.Query().Get("minutes")
	if v == "" {
		return min(15, s.roll.Window()), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > s.roll.Window() {
		return 0, api.BadRequest("minutes %q: want 1 to %d", v, s.roll.Window())
	}
	return n, nil
}

// red turns rollup figures over n minutes into the API's.
func red(st *rollup.Stats, minutes int) trace.RED {
	out := trace.RED{Calls: st.Calls, Errors: st.Errors}
	if st.Calls == 0 {
		return out
	}
	out.PerSecond = float64(st.Calls) / float64(60*minutes)
	out.ErrorRatio = float64(st.Errors) / float64(st.Calls)
	out.MeanMS = float64(st.SumNano) / float64(st.Calls) / 1e6
	out.P50MS, out.P95MS, out.P99MS = st.Hist.Quantile(0.5)/1e6, st.Hist.Quantile(0.95)/1e6, st.Hist.Quantile(0.99)/1e6
	return out
}

func (s *Server) services(n int) []trace.ServiceRED {
	sums := s.roll.Services(n)
	out := make([]trace.ServiceRED, len(sums))
	for i := range sums {
		out[i] = trace.ServiceRED{Service: sums[i].Service, RED: red(&sums[i].Stats, n)}
	}
	return out
}

// Mount registers the query API under /api/v1/trace/, each route wrapped
// by wrap (the platform's authentication); reading needs the read
// permission.
func (s *Server) Mount(mux api.Mux, wrap func(http.Handler) http.Handler) {
	h := func(pattern string, fn api.HandlerFunc) { mux.Handle(pattern, wrap(api.Handler(s.log, fn))) }
	read := func(r *http.Request) error { return auth.Check(r.Context(), auth.PermRead, "", "", "") }
	h("GET "+apiBase+"/traces/{id}", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		id, ok := store.ParseTraceID(r.PathValue("id"))
		if !ok {
			return api.BadRequest("trace ID %q: want 32 hex digits", r.PathValue("id"))
		}
		spans, err := s.st.Trace(id)
		if err != nil {
			return err
		}
		if len(spans) == 0 {
			return api.NotFound("no trace %s", r.PathValue("id"))
		}
		reply := trace.TraceReply{TraceID: hex.EncodeToString(id[:]), Spans: make([]trace.Span, 0, len(spans))}
		for i := range spans {
			if spans[i].Kind == store.KindLog {
				reply.Logs = append(reply.Logs, toAPILog(&spans[i]))
				continue
			}
			reply.Spans = append(reply.Spans, toAPI(&spans[i]))
		}
		api.WriteJSON(w, http.StatusOK, reply)
		return nil
	})
	h("GET "+apiBase+"/traces", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		q, err := parseQuery(r)
		if err != nil {
			return err
		}
		found, err := s.st.Search(q)
		if err != nil {
			return err
		}
		reply := trace.SearchReply{Traces: make([]trace.Match, len(found))}
		for i, m := range found {
			reply.Traces[i] = trace.Match{TraceID: hex.EncodeToString(m.TraceID[:]), Service: m.Service, Name: m.Name,
				StartUnixNano: m.StartUnixNano, DurationNano: m.DurationNano, Status: statusNames[m.Status]}
		}
		api.WriteJSON(w, http.StatusOK, reply)
		return nil
	})
	h("GET "+apiBase+"/services", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		n, err := s.minutes(r)
		if err != nil {
			return err
		}
		api.WriteJSON(w, http.StatusOK, trace.ServicesReply{Minutes: n, Services: s.services(n)})
		return nil
	})
	h("GET "+apiBase+"/services/{service}/operations", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		n, err := s.minutes(r)
		if err != nil {
			return err
		}
		svc := r.PathValue("service")
		sums := s.roll.Operations(svc, n)
		reply := trace.OperationsReply{Service: svc, Minutes: n, Operations: make([]trace.OperationRED, len(sums))}
		for i := range sums {
			reply.Operations[i] = trace.OperationRED{Name: sums[i].Operation, Kind: kindNames[sums[i].Kind], RED: red(&sums[i].Stats, n)}
		}
		api.WriteJSON(w, http.StatusOK, reply)
		return nil
	})
	h("GET "+apiBase+"/series", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		n, err := s.minutes(r)
		if err != nil {
			return err
		}
		svc, op := r.URL.Query().Get("service"), r.URL.Query().Get("operation")
		if svc == "" {
			return api.BadRequest("service is required")
		}
		pts := s.roll.Series(svc, op, n)
		reply := trace.SeriesReply{Service: svc, Operation: op, Points: make([]trace.Point, len(pts))}
		for i := range pts {
			reply.Points[i] = trace.Point{Time: pts[i].Minute.Format(time.RFC3339), RED: red(&pts[i].Stats, 1)}
		}
		api.WriteJSON(w, http.StatusOK, reply)
		return nil
	})
	h("GET "+apiBase+"/dependencies", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		n, err := s.minutes(r)
		if err != nil {
			return err
		}
		deps := s.roll.Dependencies(n)
		reply := trace.DependenciesReply{Minutes: n, Services: s.services(n), Edges: make([]trace.Edge, len(deps))}
		for i := range deps {
			reply.Edges[i] = trace.Edge{From: deps[i].From, To: deps[i].To, RED: red(&deps[i].Stats, n)}
		}
		api.WriteJSON(w, http.StatusOK, reply)
		return nil
	})
	h("GET "+apiBase+"/metrics", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		st := s.series.Stats()
		reply := trace.MetricsReply{Names: []trace.MetricName{}, Series: st.Series, Points: s.metricsReceived.Load(), Refused: s.metricsRefused.Load(), Minutes: s.series.Window()}
		for _, n := range s.series.Names() {
			reply.Names = append(reply.Names, trace.MetricName{Name: n.Name, Kind: n.Kind.String(), Series: n.Series})
		}
		api.WriteJSON(w, http.StatusOK, reply)
		return nil
	})
	h("GET "+apiBase+"/metrics/series", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		q := series.Query{Name: r.URL.Query().Get("name"), Match: map[string]string{}}
		if q.Name == "" {
			return api.BadRequest("name is required")
		}
		for _, m := range r.URL.Query()["match"] {
			k, v, ok := strings.Cut(m, "=")
			if !ok || k == "" {
				return api.BadRequest("match %q: want label=value", m)
			}
			q.Match[k] = v
		}
		q.Minutes = s.series.Window()
		if v := r.URL.Query().Get("minutes"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > s.series.Window() {
				return api.BadRequest("minutes %q: want 1 to %d", v, s.series.Window())
			}
			q.Minutes = n
		}
		reply := trace.MetricSeriesReply{Name: q.Name, Minutes: q.Minutes, Series: []trace.MetricSeries{}}
		for _, se := range s.series.Query(q) {
			ms := trace.MetricSeries{Labels: map[string]string{}, Kind: se.Kind.String(), Points: make([]trace.MetricPoint, len(se.Points))}
			for _, l := range se.Labels {
				ms.Labels[l.Name] = l.Value
			}
			for i, p := range se.Points {
				ms.Points[i] = trace.MetricPoint{Time: p.Minute.Format(time.RFC3339), Value: p.Value}
			}
			reply.Series = append(reply.Series, ms)
		}
		api.WriteJSON(w, http.StatusOK, reply)
		return nil
	})
	s.mountAlerts(h)
	h("GET "+apiBase+"/stats", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		c, st := s.Counts(), s.st.Stats()
		api.WriteJSON(w, http.StatusOK, trace.StatsReply{Received: c.Received, Dropped: c.Dropped, Stored: c.Stored, Failed: c.Failed,
			Queued: c.Queued, SampledOut: c.SampledOut, Segments: st.Segments, Bytes: st.Bytes, Spans: st.Spans})
		return nil
	})
}

// parseQuery reads a search: service, operation, min_duration and
// max_duration (Go durations), errors=true, start and end (RFC 3339),
// attr=key=value (repeatable), limit (1-1000, default 20).
func parseQuery(r *http.Request) (store.Query, error) {
	v := r.URL.Query()
	q := store.Query{Service: v.Get("service"), Operation: v.Get("operation"), Limit: 20}
	dur := func(name string) (time.Duration, error) {
		if v.Get(name) == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(v.Get(name))
		if err != nil || d < 0 {
			return 0, api.BadRequest("%s %q: want a duration such as 250ms", name, v.Get(name))
		}
		return d, nil
	}
	var err error
	if q.MinDuration, err = dur("min_duration"); err != nil {
		return q, err
	}
	if q.MaxDuration, err = dur("max_duration"); err != nil {
		return q, err
	}
	for name, dst := range map[string]*time.Time{"start": &q.Start, "end": &q.End} {
		if v.Get(name) == "" {
			continue
		}
		if *dst, err = time.Parse(time.RFC3339Nano, v.Get(name)); err != nil {
			return q, api.BadRequest("%s %q: want an RFC 3339 time", name, v.Get(name))
		}
	}
	switch v.Get("errors") {
	case "", "false":
	case "true":
		q.OnlyErrors = true
	default:
		return q, api.BadRequest("errors %q: want true or false", v.Get("errors"))
	}
	for _, a := range v["attr"] {
		k, val, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return q, api.BadRequest("attr %q: want key=value", a)
		}
		if q.Attrs == nil {
			q.Attrs = map[string]string{}
		}
		q.Attrs[k] = val
	}
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			return q, api.BadRequest("limit %q: want 1 to 1000", l)
		}
		q.Limit = n
	}
	return q, nil
}

var (
	kindNames   = map[store.Kind]string{store.KindUnspecified: "unspecified", store.KindInternal: "internal", store.KindServer: "server", store.KindClient: "client", store.KindProducer: "producer", store.KindConsumer: "consumer"}
	statusNames = map[store.Status]string{store.StatusUnset: "unset", store.StatusOK: "ok", store.StatusError: "error"}
)

func toAPI(s *store.Span) trace.Span {
	out := trace.Span{
		TraceID: hex.EncodeToString(s.TraceID[:]), SpanID: hex.EncodeToString(s.SpanID[:]), Service: s.Service, Name: s.Name,
		Kind: kindNames[s.Kind], StartUnixNano: s.StartUnixNano, DurationNano: s.DurationNano, Status: statusNames[s.Status],
		StatusMessage: s.StatusMessage, Attributes: attrMap(s.Attrs), Resource: attrMap(s.Resource),
	}
	if s.ParentID != (store.SpanID{}) {
		out.ParentID = hex.EncodeToString(s.ParentID[:])
	}
	for _, e := range s.Events {
		out.Events = append(out.Events, trace.Event{TimeUnixNano: e.TimeUnixNano, Name: e.Name, Attributes: attrMap(e.Attrs)})
	}
	for _, l := range s.Links {
		out.Links = append(out.Links, trace.Link{TraceID: hex.EncodeToString(l.TraceID[:]), SpanID: hex.EncodeToString(l.SpanID[:]), Attributes: attrMap(l.Attrs)})
	}
	return out
}

func toAPILog(s *store.Span) trace.LogRecord {
	out := trace.LogRecord{TimeUnixNano: s.StartUnixNano, Service: s.Service, Severity: s.StatusMessage, Body: s.Name, Attributes: attrMap(s.Attrs)}
	if s.SpanID != (store.SpanID{}) {
		out.SpanID = hex.EncodeToString(s.SpanID[:])
	}
	return out
}

func attrMap(as []store.Attr) map[string]any {
	if len(as) == 0 {
		return nil
	}
	m := make(map[string]any, len(as))
	for _, a := range as {
		switch a.Value.Type {
		case store.TypeInt:
			m[a.Key] = a.Value.Int
		case store.TypeFloat:
			if math.IsNaN(a.Value.Float) || math.IsInf(a.Value.Float, 0) {
				m[a.Key] = a.Value.Text() // JSON has no NaN or infinity
			} else {
				m[a.Key] = a.Value.Float
			}
		case store.TypeBool:
			m[a.Key] = a.Value.Bool
		case store.TypeBytes:
			m[a.Key] = base64.StdEncoding.EncodeToString([]byte(a.Value.Str))
		case store.TypeJSON:
			m[a.Key] = json.RawMessage(a.Value.Str)
		default:
			m[a.Key] = a.Value.Str
		}
	}
	return m
}
