package server

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the config center's Prometheus series.
type metrics struct {
	releases *prometheus.CounterVec // by kind
	answers  *prometheus.CounterVec // watch answers by reason
	fetches  *prometheus.CounterVec // client fetches by cache result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		releases: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tangram_config_releases_total",
			Help: "Releases made on this server, by kind (normal, emergency, rollback, gray, gray-promote, approved)."}, []string{"kind"}),
		answers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tangram_config_watch_answers_total",
			Help: "Watches answered, by reason: change, timeout, hangup (client gone), shutdown."}, []string{"reason"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "tangram_config_fetches_total",
			Help: "Client fetches, by whether the served cache had the namespace (hit) or loaded it (miss)."}, []string{"cache"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.releases, m.answers, m.fetches} {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, err
			}
		}
	}
	return m, nil
}
