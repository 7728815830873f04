package alert_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/trace/alert"
	"github.com/tangram-dev/tangram/trace/rollup"
	"github.com/tangram-dev/tangram/trace/store"
)

var now = time.Date(2026, 12, 7, 12, 0, 30, 0, time.UTC)

// feed puts calls spans of svc into minute m (0: now's minute, -1: the one
// before), errs of them failed, each dur long.
func feed(r *rollup.Rollup, svc string, m, calls, errs int, dur time.Duration) {
	var spans []store.Span
	for i := range calls {
		s := store.Span{Service: svc, Name: "op", Kind: store.KindServer, SpanID: store.SpanID{byte(m + 100), byte(i), byte(i >> 8)},
			StartUnixNano: uint64(now.Add(time.Duration(m) * time.Minute).UnixNano()), DurationNano: uint64(dur)}
		if i < errs {
			s.Status = store.StatusError
		}
		spans = append(spans, s)
	}
	r.Add(spans)
}

func TestThresholds(t *testing.T) {
	r := rollup.New(rollup.Config{Now: func() time.Time { return now }})
	feed(r, "pay", -2, 100, 2, 10*time.Millisecond)
	feed(r, "pay", 0, 100, 10, 300*time.Millisecond)
	for _, c := range []struct {
		rule   alert.Rule
		firing bool
		value  float64
	}{
		{alert.Rule{Service: "pay", Metric: alert.ErrorRatio, Threshold: 0.05}, true, 0.06},
		{alert.Rule{Service: "pay", Metric: alert.ErrorRatio, Threshold: 0.05, Window: 1}, true, 0.10},
		{alert.Rule{Service: "pay", Metric: alert.ErrorRatio, Threshold: 0.2}, false, 0.06},
		{alert.Rule{Service: "pay", Metric: alert.P99, Threshold: 250}, true, 300},
		{alert.Rule{Service: "pay", Metric: alert.P50, Threshold: 250}, false, 10},
		{alert.Rule{Service: "pay", Metric: alert.CallsPerMin, Threshold: 50, Below: true}, true, 40},
		{alert.Rule{Service: "pay", Metric: alert.CallsPerMin, Threshold: 30, Below: true}, false, 40},
		{alert.Rule{Service: "idle", Metric: alert.CallsPerMin, Threshold: 1, Below: true}, true, 0},
		{alert.Rule{Service: "idle", Metric: alert.ErrorRatio, Threshold: 0}, false, 0},                     // no calls, no ratio
		{alert.Rule{Service: "pay", Metric: alert.ErrorRatio, Threshold: 0.05, MinCalls: 500}, false, 0.06}, // too few calls
	} {
		rd := alert.Evaluate(r, c.rule)
		within := c.value == 0 && rd.Value == 0 || rd.Value > c.value*0.85 && rd.Value < c.value*1.15
		if rd.Firing != c.firing || !within {
			t.Errorf("%+v: firing %v value %v, want %v about %v", c.rule, rd.Firing, rd.Value, c.firing, c.value)
		}
	}
}

// TestBurnRate: both windows must burn: a burst that is over (the short
// window clean) does not fire; a sustained one does.
func TestBurnRate(t *testing.T) {
	rule := alert.Rule{Service: "pay", Metric: alert.BurnRate, Objective: 0.99, Threshold: 10, Window: 60}
	r := rollup.New(rollup.Config{Now: func() time.Time { return now }})
	feed(r, "pay", -30, 100, 50, time.Millisecond) // a burst half an hour ago
	for m := -29; m <= 0; m++ {
		feed(r, "pay", m, 100, 0, time.Millisecond)
	}
	rd := alert.Evaluate(r, rule)
	if rd.Firing || rd.Short != 0 || rd.Value < 1 {
		t.Errorf("an old burst: %+v (want a long burn, no short burn, quiet)", rd)
	}
	feed(r, "pay", 0, 100, 90, time.Millisecond) // and now a sustained one
	for m := -4; m < 0; m++ {
		feed(r, "pay", m, 100, 90, time.Millisecond)
	}
	rd = alert.Evaluate(r, rule)
	if !rd.Firing || rd.Short < 10 || rd.Value < 10 {
		t.Errorf("a sustained burn: %+v (want both windows ≥ 10)", rd)
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		rule alert.Rule
		want string
	}{
		{alert.Rule{Name: "-x", Service: "a", Metric: alert.P99}, "name"},
		{alert.Rule{Name: "x", Metric: alert.P99}, "service is required"},
		{alert.Rule{Name: "x", Service: "a", Metric: "p42"}, "metric"},
		{alert.Rule{Name: "x", Service: "a", Metric: alert.ErrorRatio, Threshold: 5}, "0 to 1"},
		{alert.Rule{Name: "x", Service: "a", Metric: alert.P99, Window: 90}, "window_minutes"},
		{alert.Rule{Name: "x", Service: "a", Metric: alert.BurnRate, Threshold: 14}, "objective"},
		{alert.Rule{Name: "x", Service: "a", Metric: alert.P99, Webhook: "ftp://x"}, "webhook"},
		{alert.Rule{Name: "x", Service: "a", Metric: alert.P99, Emails: []string{"nobody"}}, "e-mail"},
	} {
		err := alert.Validate(&c.rule, 60)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error naming %q", c.rule, err, c.want)
		}
	}
	ok := alert.Rule{Name: "pay.errors", Service: "pay", Metric: alert.BurnRate, Objective: 0.999, Threshold: 14.4, Window: 60}
	if err := alert.Validate(&ok, 60); err != nil {
		t.Errorf("a good rule: %v", err)
	}
}
