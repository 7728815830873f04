package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tangram-dev/tangram/job"
)

// schedMetrics are the scheduler's counters, exported by Collector.
type schedMetrics struct {
	dispatched prometheus.Counter
	lateness   prometheus.Histogram
	finished   *prometheus.CounterVec
	coalesced  prometheus.Collector
}

func newSchedMetrics(s *Scheduler) *schedMetrics {
	m := &schedMetrics{
		dispatched: prometheus.NewCounter(prometheus.CounterOpts{Name: "tangram_job_dispatched_total",
			Help: "Run requests sent to executors (retries and every shard included)."}),
		// From 1 ms to about 4 min: a run sent on time lands in the
		// lowest buckets, a misfire or a backlog in the top ones.
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "tangram_job_dispatch_lateness_seconds",
			Help:    "How long after its fire time a run was sent to its executor.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tangram_job_runs_finished_total",
			Help: "Runs finished, by outcome (succeeded, failed, killed, discarded…)."}, []string{"status"}),
		coalesced: prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "tangram_job_coalesced_fires_total",
			Help: "Job fires missed beyond their misfire threshold and collapsed into one run or skipped record (its covers count)."},
			func() float64 { return float64(s.coalesced.Load()) }),
	}
	for _, st := range []string{job.StatusSucceeded, job.StatusFailed} {
		m.finished.WithLabelValues(st) // shown at zero before the first
	}
	return m
}

// stamp dates a run request as sent now and counts the dispatch and its
// lateness from the run's fire time.
func (s *Scheduler) stamp(rr *job.RunRequest) {
	now := time.Now()
	rr.Stamp = ms(now)
	s.metrics.dispatched.Inc()
	if rr.FireAt > 0 {
		s.metrics.lateness.Observe(max(now.Sub(fromMS(rr.FireAt)), 0).Seconds())
	}
}

// finished counts runs finished with status (once committed).
func (m *schedMetrics) countFinished(status string, n int) {
	if n > 0 {
		m.finished.WithLabelValues(status).Add(float64(n))
	}
}

// Collector exports the scheduler's metrics to Prometheus: dispatches and
// their lateness, finished runs by outcome, coalesced misfires.
func (s *Scheduler) Collector() prometheus.Collector { return schedCollector{s.metrics} }

type schedCollector struct{ m *schedMetrics }

func (c schedCollector) Describe(ch chan<- *prometheus.Desc) {
	c.m.dispatched.Describe(ch)
	c.m.lateness.Describe(ch)
	c.m.finished.Describe(ch)
	c.m.coalesced.Describe(ch)
}

func (c schedCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.dispatched.Collect(ch)
	c.m.lateness.Collect(ch)
	c.m.finished.Collect(ch)
	c.m.coalesced.Collect(ch)
}
