package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector returns the server's metrics, collected on demand: commands
// and their time by command, keys, estimated data memory, expired and
// evicted keys, connections, keyspace hits and misses.
func (s *Server) Collector() prometheus.Collector {
	return &collector{s: s,
		calls:   prometheus.NewDesc("tangram_kv_commands_total", "Commands run, by command.", []string{"command"}, nil),
		secs:    prometheus.NewDesc("tangram_kv_command_seconds_total", "Time spent running commands, by command.", []string{"command"}, nil),
		failed:  prometheus.NewDesc("tangram_kv_command_errors_total", "Commands that replied with an error, by command.", []string{"command"}, nil),
		keys:    prometheus.NewDesc("tangram_kv_keys", "Keys in all databases.", nil, nil),
		mem:     prometheus.NewDesc("tangram_kv_used_memory_bytes", "Estimated size of the data (keys, values, overheads).", nil, nil),
		expired: prometheus.NewDesc("tangram_kv_expired_keys_total", "Keys removed because their time came.", nil, nil),
		evicted: prometheus.NewDesc("tangram_kv_evicted_keys_total", "Keys evicted by the maxmemory policy.", nil, nil),
		conns:   prometheus.NewDesc("tangram_kv_connected_clients", "Open client connections.", nil, nil),
		hits:    prometheus.NewDesc("tangram_kv_keyspace_hits_total", "Key lookups that found the key.", nil, nil),
		misses:  prometheus.NewDesc("tangram_kv_keyspace_misses_total", "Key lookups that did not.", nil, nil),
	}
}

type collector struct {
	s                                                                     *Server
	calls, secs, failed, keys, mem, expired, evicted, conns, hits, misses *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.calls, c.secs, c.failed, c.keys, c.mem, c.expired, c.evicted, c.conns, c.hits, c.misses} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	for _, cs := range s.stats.commandStats() {
		ch <- prometheus.MustNewConstMetric(c.calls, prometheus.CounterValue, float64(cs.calls), cs.name)
		ch <- prometheus.MustNewConstMetric(c.secs, prometheus.CounterValue, float64(cs.usec)/1e6, cs.name)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(cs.failed), cs.name)
	}
	ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(s.dbsize(-1)))
	ch <- prometheus.MustNewConstMetric(c.mem, prometheus.GaugeValue, float64(s.usedMemory()))
	ch <- prometheus.MustNewConstMetric(c.expired, prometheus.CounterValue, float64(s.stats.expired.Load()))
	ch <- prometheus.MustNewConstMetric(c.evicted, prometheus.CounterValue, float64(s.stats.evicted.Load()))
	s.mu.Lock()
	n := len(s.clients)
	s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.conns, prometheus.GaugeValue, float64(n))
	var hits, misses int64
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		hits, misses = hits+sh.hits, misses+sh.misses
		sh.mu.Unlock()
	}
	ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(hits))
	ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(misses))
}
