// Package metrictest reads a Prometheus collector's values in tests.
package metrictest

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Value is the sum of the values of c's metrics named name whose labels
// include every pair in labels (name, value, name, value…): a counter's or
// gauge's value, a histogram's or summary's sample count.
func Value(t testing.TB, c prometheus.Collector, name string, labels ...string) float64 {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metrictest: labels %q are not name/value pairs", labels)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("metrictest: %v", err)
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("metrictest: gather: %v", err)
	}
	var v float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for i := 0; i < len(labels); i += 2 {
				found := false
				for _, l := range m.GetLabel() {
					if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metrics
				}
			}
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue() +
				float64(m.GetHistogram().GetSampleCount()) + float64(m.GetSummary().GetSampleCount())
		}
	}
	return v
}
