package console

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/auth"

	"github.com/tangram-dev/tangram/trace/rollup"
	"github.com/tangram-dev/tangram/trace/series"
)

// chart is a line chart of one or more series over a run of minutes, in
// a 600×140 box with a 40-pixel left margin for its scale; layout.html's
// "charts" template draws it as SVG (no script: the console's CSP allows
// none).
type chart struct {
	Title  string
	Max    string
	Lines  []chartLine
	Labels []chartLabel
}

type chartLine struct {
	Class, Name, Points string
}

type chartLabel struct {
	X            float64
	Text, Anchor string
}

const (
	chartW, chartH, chartLeft = 600.0, 140.0, 40.0
)

// line is one series of a chart: a value per minute, NaN where there is
// none (the line skips it).
type line struct {
	class, name string
	values      []float64
}

func lineChart(title string, minutes []time.Time, unit string, lines ...line) chart {
	c := chart{Title: title}
	top := 0.0
	for _, l := range lines {
		for _, v := range l.values {
			if !math.IsNaN(v) {
				top = math.Max(top, v)
			}
		}
	}
	if top == 0 {
		top = 1
	}
	c.Max = strconv.FormatFloat(top, 'g', 3, 64) + unit
	n := len(minutes)
	x := func(i int) float64 {
		if n <= 1 {
			return chartLeft
		}
		return chartLeft + (chartW-chartLeft-10)*float64(i)/float64(n-1)
	}
	for _, l := range lines {
		var b strings.Builder
		for i, v := range l.values {
			if i >= n || math.IsNaN(v) {
				continue
			}
			y := chartH - 10 - (chartH-20)*math.Max(v, 0)/top
			fmt.Fprintf(&b, "%.1f,%.1f ", x(i), y)
		}
		c.Lines = append(c.Lines, chartLine{Class: l.class, Name: l.name, Points: strings.TrimSpace(b.String())})
	}
	for k, i := range []int{0, n / 2, n - 1} {
		if i >= 0 && i < n {
			c.Labels = append(c.Labels, chartLabel{X: x(i), Text: minutes[i].Local().Format("15:04"), Anchor: []string{"start", "middle", "end"}[k]})
		}
	}
	return c
}

// rollupLine is a line drawn from the collector's RED figures.
type rollupLine struct {
	class, name string
	value       func(*rollup.Stats) float64
}

func rollupChart(title string, pts []rollup.Point, unit string, rl ...rollupLine) chart {
	minutes := make([]time.Time, len(pts))
	for i := range pts {
		minutes[i] = pts[i].Minute
	}
	lines := make([]line, len(rl))
	for k, l := range rl {
		lines[k] = line{class: l.class, name: l.name, values: make([]float64, len(pts))}
		for i := range pts {
			lines[k].values[i] = l.value(&pts[i].Stats)
		}
	}
	return lineChart(title, minutes, unit, lines...)
}

// componentMinutes is how far back a component page's charts go at most,
// minMinutes how little they show.
const componentMinutes, minMinutes = 60, 15

// how a metric line combines the series it selects.
type combine int

const (
	sumOf combine = iota // added (counters' increases; gauges each server holds apart)
	maxOf                // the largest (gauges every server reports whole)
	p99Of                // the 99th percentile of a histogram's _bucket series
)

// metricLine is a chart line read from the collector's series store.
type metricLine struct {
	class, name string
	metric      string
	match       map[string]string
	how         combine
	scale       float64 // multiplies the values (0: 1)
}

// metricChart draws lines from the series the server samples into its
// collector, over the last componentMinutes minutes at most — from the
// first minute with data, so a server up for ten minutes fills the chart
// (at least minMinutes are shown). A minute with no point is a gap. ok is
// false when no collector runs or none of the lines has a series yet.
func (c *Console) metricChart(title, unit string, ml ...metricLine) (chart, bool) {
	if c.cfg.Traces == nil || c.cfg.Traces.Series() == nil {
		return chart{}, false
	}
	st := c.cfg.Traces.Series()
	sets := make([][]series.Series, len(ml))
	var first time.Time
	for i, m := range ml {
		sets[i] = st.Query(series.Query{Name: m.metric, Match: m.match, Minutes: componentMinutes})
		for _, s := range sets[i] {
			if len(s.Points) > 0 && (first.IsZero() || s.Points[0].Minute.Before(first)) {
				first = s.Points[0].Minute
			}
		}
	}
	if first.IsZero() {
		return chart{}, false
	}
	n := min(max(int(time.Since(first)/time.Minute)+1, minMinutes), componentMinutes)
	minutes := st.Minutes(n)
	lines := make([]line, 0, len(ml))
	for i, m := range ml {
		var vs []float64
		switch m.how {
		case p99Of:
			vs = series.Quantile(0.99, sets[i], minutes)
		case maxOf:
			vs = gaugeLine(sets[i], minutes, math.Max)
		default:
			vs = gaugeLine(sets[i], minutes, func(a, b float64) float64 { return a + b })
		}
		if m.scale != 0 {
			for i := range vs {
				vs[i] *= m.scale
			}
		}
		lines = append(lines, line{class: m.class, name: m.name, values: vs})
	}
	return lineChart(title, minutes, unit, lines...), true
}

// gaugeLine combines series minute by minute with f (gauges' values,
// counters' increases); a minute no series has a value for is NaN (a gap,
// not a drop to zero).
func gaugeLine(ss []series.Series, minutes []time.Time, f func(a, b float64) float64) []float64 {
	out := make([]float64, len(minutes))
	for i := range out {
		out[i] = math.NaN()
	}
	index := make(map[int64]int, len(minutes))
	for i, m := range minutes {
		index[m.Unix()] = i
	}
	for _, s := range ss {
		for _, p := range s.Points {
			i, ok := index[p.Minute.Unix()]
			if !ok {
				continue
			}
			if math.IsNaN(out[i]) {
				out[i] = p.Value
			} else {
				out[i] = f(out[i], p.Value)
			}
		}
	}
	return out
}

// chartSet gathers a page's charts, leaving out those with no data.
type chartSet []chart

func (cs *chartSet) add(c chart, ok bool) {
	if ok {
		*cs = append(*cs, c)
	}
}

// maxSeriesCharts bounds the charts a metric's page draws, one per series.
const maxSeriesCharts = 12

// metricsPage: the metric names the collector keeps (from OTLP and the
// servers' own sampling), each with its kind and number of series.
func (c *Console) metricsPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	st := c.cfg.Traces.Series()
	if st == nil {
		return api.Errorf(http.StatusServiceUnavailable, "unavailable", "the collector keeps no metrics")
	}
	c.render(w, r, "metrics", "Metrics", map[string]any{"Names": st.Names(), "Stats": st.Stats(), "Window": st.Window()})
	return nil
}

// metricPage: one metric's series over the last hour, a chart each
// (narrowed by match=label=value), and their sum.
func (c *Console) metricPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
		return err
	}
	st := c.cfg.Traces.Series()
	if st == nil {
		return api.Errorf(http.StatusServiceUnavailable, "unavailable", "the collector keeps no metrics")
	}
	name := r.PathValue("name")
	match := map[string]string{}
	for _, m := range r.URL.Query()["match"] {
		k, v, ok := strings.Cut(m, "=")
		if !ok || k == "" {
			return api.BadRequest("match %q: want label=value", m)
		}
		match[k] = v
	}
	ss := st.Query(series.Query{Name: name, Match: match, Minutes: componentMinutes})
	if len(ss) == 0 {
		return api.NotFound("no series %s matching %v", name, match)
	}
	minutes := st.Minutes(componentMinutes)
	kind := ss[0].Kind.String()
	unit := ""
	if ss[0].Kind == series.Counter {
		unit = " /min"
	}
	var cs []chart
	if len(ss) > 1 {
		cs = append(cs, lineChart("All "+strconv.Itoa(len(ss))+" series, added", minutes, unit,
			line{class: "line-calls", name: "sum", values: gaugeLine(ss, minutes, func(a, b float64) float64 { return a + b })}))
	}
	for _, s := range ss[:min(len(ss), maxSeriesCharts)] {
		var labels []string
		for _, l := range s.Labels {
			labels = append(labels, l.Name+"="+l.Value)
		}
		title := strings.Join(labels, " ")
		if title == "" {
			title = name
		}
		cs = append(cs, lineChart(title, minutes, unit, line{class: "line-calls", name: kind, values: gaugeLine([]series.Series{s}, minutes, math.Max)}))
	}
	c.render(w, r, "metric", name, map[string]any{"Name": name, "Kind": kind, "Charts": cs, "Series": len(ss),
		"More": len(ss) > maxSeriesCharts, "Match": r.URL.Query()["match"]})
	return nil
}
