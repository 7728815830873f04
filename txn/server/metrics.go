package server

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the coordinator's counters: transactions started and ended
// by mode (and end state), phase-two latency, branch calls by result.
type metrics struct {
	started  *prometheus.CounterVec
	ended    *prometheus.CounterVec
	phaseTwo *prometheus.HistogramVec
	calls    *prometheus.CounterVec
	// lockConflicts counts AT row-lock requests that found a row held by
	// another transaction (each wait round counts).
	lockConflicts *prometheus.CounterVec
}

func newMetrics() metrics {
	return metrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tangram_txn_started_total",
			Help: "Global transactions begun, by mode."}, []string{"mode"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tangram_txn_ended_total",
			Help: "Global transactions that reached committed, aborted or failed (parked), by mode."}, []string{"mode", "status"}),
		phaseTwo: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "tangram_txn_phase_two_seconds",
			Help: "From the decision (or the last retry) to the end of phase two.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"mode"}),
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tangram_txn_branch_calls_total",
			Help: "Branch operation calls, by operation and result (ok, failure, error)."}, []string{"op", "result"}),
		lockConflicts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tangram_txn_lock_conflicts_total",
			Help: "AT global row-lock requests that found a row held by another transaction, by resource."}, []string{"resource"}),
	}
}

func (m metrics) register(r prometheus.Registerer) error {
	var errs []error
	for _, c := range []prometheus.Collector{m.started, m.ended, m.phaseTwo, m.calls, m.lockConflicts} {
		if err := r.Register(c); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
