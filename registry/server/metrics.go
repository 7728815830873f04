package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/tangram-dev/tangram/registry"
)

type metrics struct {
	expired    prometheus.Counter
	collectors []prometheus.Collector
}

func newMetrics(r *Registry) *metrics {
	m := &metrics{expired: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tangram_registry_expired_total", Help: "Ephemeral instances removed after their heartbeats stopped."})}
	gauge := func(name, help string, f func(registry.Status) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return f(r.Status()) })
	}
	m.collectors = []prometheus.Collector{m.expired,
		gauge("tangram_registry_instances", "Instances registered (all servers' replicas included).", func(s registry.Status) float64 { return float64(s.Instances) }),
		gauge("tangram_registry_services", "Services with at least one instance.", func(s registry.Status) float64 { return float64(s.Services) }),
		gauge("tangram_registry_self_preservation", "1 while self-preservation holds expired instances.", func(s registry.Status) float64 {
			if s.SelfPreservation {
				return 1
			}
			return 0
		}),
		gauge("tangram_registry_renewals", "Heartbeats received in the self-preservation window.", func(s registry.Status) float64 { return float64(s.Renewals) }),
		gauge("tangram_registry_expected_renewals", "Heartbeats expected in the window from the instances this server owns.", func(s registry.Status) float64 { return float64(s.ExpectedRenewals) }),
		gauge("tangram_registry_watchers", "Watches held open.", func(s registry.Status) float64 { return float64(s.Watchers) }),
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
