package trace

import (
	"context"
	"net/url"
	"strconv"
	"time"

	"github.com/tangram-dev/tangram/internal/apiclient"
)

// Admin is a typed client for the collector's query API
// (/api/v1/trace): a trace by ID, searches, the RED figures, the
// dependency map and the collector's counters. The CLI (`tangram trace`)
// and tools use it.
type Admin struct{ c *apiclient.Client }

// NewAdmin returns an admin client for the server at base (e.g.
// "http://127.0.0.1:7070") authenticating with an API token.
func NewAdmin(base, token string) *Admin { return &Admin{c: apiclient.New(base, token)} }

// APIBase is the query API's root.
const APIBase = "/api/v1/trace"

// Trace returns a trace's spans by start time.
func (a *Admin) Trace(ctx context.Context, id string) (TraceReply, error) {
	var out TraceReply
	err := a.c.Do(ctx, "GET", APIBase+"/traces/"+url.PathEscape(id), nil, &out)
	return out, err
}

// Query is a search: every set field must match one span of a trace.
type Query struct {
	Service, Operation       string
	MinDuration, MaxDuration time.Duration
	ErrorsOnly               bool
	Start, End               time.Time
	Attrs                    map[string]string
	Limit                    int
}

// Search returns the matching traces, newest first.
func (a *Admin) Search(ctx context.Context, q Query) (SearchReply, error) {
	v := url.Values{}
	set := func(k, s string) {
		if s != "" {
			v.Set(k, s)
		}
	}
	set("service", q.Service)
	set("operation", q.Operation)
	if q.MinDuration > 0 {
		v.Set("min_duration", q.MinDuration.String())
	}
	if q.MaxDuration > 0 {
		v.Set("max_duration", q.MaxDuration.String())
	}
	if q.ErrorsOnly {
		v.Set("errors", "true")
	}
	if !q.Start.IsZero() {
		v.Set("start", q.Start.Format(time.RFC3339Nano))
	}
	if !q.End.IsZero() {
		v.Set("end", q.End.Format(time.RFC3339Nano))
	}
	for k, val := range q.Attrs {
		v.Add("attr", k+"="+val)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out SearchReply
	err := a.c.Do(ctx, "GET", APIBase+"/traces?"+v.Encode(), nil, &out)
	return out, err
}

func minutesQuery(minutes int) string {
	if minutes <= 0 {
		return ""
	}
	return "minutes=" + strconv.Itoa(minutes)
}

// Services returns each service's figures over the last minutes (0: the
// server's default, 15).
func (a *Admin) Services(ctx context.Context, minutes int) (ServicesReply, error) {
	var out ServicesReply
	err := a.c.Do(ctx, "GET", APIBase+"/services?"+minutesQuery(minutes), nil, &out)
	return out, err
}

// Operations returns a service's operations, busiest first.
func (a *Admin) Operations(ctx context.Context, service string, minutes int) (OperationsReply, error) {
	var out OperationsReply
	err := a.c.Do(ctx, "GET", APIBase+"/services/"+url.PathEscape(service)+"/operations?"+minutesQuery(minutes), nil, &out)
	return out, err
}

// Series returns a service's (or one operation's) figures minute by minute.
func (a *Admin) Series(ctx context.Context, service, operation string, minutes int) (SeriesReply, error) {
	v := url.Values{"service": {service}}
	if operation != "" {
		v.Set("operation", operation)
	}
	if minutes > 0 {
		v.Set("minutes", strconv.Itoa(minutes))
	}
	var out SeriesReply
	err := a.c.Do(ctx, "GET", APIBase+"/series?"+v.Encode(), nil, &out)
	return out, err
}

// Dependencies returns the service map over the last minutes.
func (a *Admin) Dependencies(ctx context.Context, minutes int) (DependenciesReply, error) {
	var out DependenciesReply
	err := a.c.Do(ctx, "GET", APIBase+"/dependencies?"+minutesQuery(minutes), nil, &out)
	return out, err
}

// Stats returns the collector's counters and the store's size.
func (a *Admin) Stats(ctx context.Context) (StatsReply, error) {
	var out StatsReply
	err := a.c.Do(ctx, "GET", APIBase+"/stats", nil, &out)
	return out, err
}

// Alerts returns every alert rule with its state.
func (a *Admin) Alerts(ctx context.Context) (AlertsReply, error) {
	var out AlertsReply
	err := a.c.Do(ctx, "GET", APIBase+"/alerts", nil, &out)
	return out, err
}

// SetAlert creates or replaces a rule.
func (a *Admin) SetAlert(ctx context.Context, r AlertRule) (AlertRule, error) {
	var out AlertRule
	err := a.c.Do(ctx, "PUT", APIBase+"/alerts/"+url.PathEscape(r.Name), r, &out)
	return out, err
}

// DeleteAlert deletes a rule.
func (a *Admin) DeleteAlert(ctx context.Context, name string) error {
	return a.c.Do(ctx, "DELETE", APIBase+"/alerts/"+url.PathEscape(name), nil, nil)
}

// Silence holds a rule's notifications for d (0 lifts the silence).
func (a *Admin) Silence(ctx context.Context, name string, d time.Duration) error {
	return a.c.Do(ctx, "POST", APIBase+"/alerts/"+url.PathEscape(name)+"/silence", SilenceRequest{For: d.String()}, nil)
}

// Ack acknowledges a firing alert: no reminders until it resolves.
func (a *Admin) Ack(ctx context.Context, name string) error {
	return a.c.Do(ctx, "POST", APIBase+"/alerts/"+url.PathEscape(name)+"/ack", nil, nil)
}

// Metrics lists the metric names the collector keeps.
func (a *Admin) Metrics(ctx context.Context) (MetricsReply, error) {
	var out MetricsReply
	err := a.c.Do(ctx, "GET", APIBase+"/metrics", nil, &out)
	return out, err
}

// MetricSeries returns the series named name whose labels have the values
// in match, over the last minutes (0: the collector's whole window).
func (a *Admin) MetricSeries(ctx context.Context, name string, match map[string]string, minutes int) (MetricSeriesReply, error) {
	q := url.Values{"name": {name}}
	for k, v := range match {
		q.Add("match", k+"="+v)
	}
	if minutes > 0 {
		q.Set("minutes", strconv.Itoa(minutes))
	}
	var out MetricSeriesReply
	err := a.c.Do(ctx, "GET", APIBase+"/metrics/series?"+q.Encode(), nil, &out)
	return out, err
}
