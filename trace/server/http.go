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
	"github.com/tangram-dev/tangram/trace/store"
)

const apiBase = "/api/v1/trace"

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
	}
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
		var id store.TraceID
		b, err := hex.DecodeString(r.PathValue("id"))
		if err != nil || len(b) != len(id) {
			return api.BadRequest("trace ID %q: want 32 hex digits", r.PathValue("id"))
		}
		copy(id[:], b)
		spans, err := s.st.Trace(id)
		if err != nil {
			return err
		}
		if len(spans) == 0 {
			return api.NotFound("no trace %s", r.PathValue("id"))
		}
		reply := trace.TraceReply{TraceID: hex.EncodeToString(id[:]), Spans: make([]trace.Span, len(spans))}
		for i := range spans {
			reply.Spans[i] = toAPI(&spans[i])
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
	h("GET "+apiBase+"/stats", func(w http.ResponseWriter, r *http.Request) error {
		if err := read(r); err != nil {
			return err
		}
		c, st := s.Counts(), s.st.Stats()
		api.WriteJSON(w, http.StatusOK, trace.StatsReply{Received: c.Received, Dropped: c.Dropped, Stored: c.Stored, Failed: c.Failed,
			Queued: c.Queued, Segments: st.Segments, Bytes: st.Bytes, Spans: st.Spans})
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
