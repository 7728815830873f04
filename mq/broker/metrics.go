package broker

import (
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tangram-dev/tangram/mq/wire"
	"github.com/tangram-dev/tangram/rpc"
)

// metrics are the broker's counters; Collector exports them.
type metrics struct {
	msgsIn, bytesIn, msgsOut atomic.Int64
	busy, retried, dlq       atomic.Int64
	txChecks                 atomic.Int64
	putHist                  prometheus.Histogram
	flushHist                prometheus.Histogram
	srv                      atomic.Pointer[rpc.Server] // for its connection counters, once started
}

func newMetrics() *metrics {
	return &metrics{putHist: prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "tangram_mq_store_seconds", Help: "Time to store a send batch (including the flush wait under sync flush).",
		Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10)}),
		flushHist: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "tangram_mq_flush_seconds", Help: "Time to sync the commitlog to disk (one group commit, or one async round).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9)})}
}

func (m *metrics) observePut(n int, bytes int64, d time.Duration) {
	m.msgsIn.Add(int64(n))
	m.bytesIn.Add(bytes)
	m.putHist.Observe(d.Seconds())
}

func (m *metrics) observePull(n int) { m.msgsOut.Add(int64(n)) }

// Collector exports the broker's metrics to Prometheus: messages and bytes
// in, messages out, store latency, busy refusals, retries, dead letters,
// transaction checks, each topic's messages and each consumer group's
// lag and consumption.
func (b *Broker) Collector() prometheus.Collector { return collector{b} }

type collector struct{ b *Broker }

var (
	descMsgsIn  = prometheus.NewDesc("tangram_mq_messages_in_total", "Messages stored.", []string{"broker"}, nil)
	descBytesIn = prometheus.NewDesc("tangram_mq_bytes_in_total", "Message bytes stored.", []string{"broker"}, nil)
	descMsgsOut = prometheus.NewDesc("tangram_mq_messages_out_total", "Messages pulled.", []string{"broker"}, nil)
	descBusy    = prometheus.NewDesc("tangram_mq_busy_total", "Sends refused as busy (back-pressure).", []string{"broker"}, nil)
	descRetried = prometheus.NewDesc("tangram_mq_retried_total", "Messages sent to a retry topic.", []string{"broker"}, nil)
	descDLQ     = prometheus.NewDesc("tangram_mq_dead_letters_total", "Messages sent to a dead-letter topic.", []string{"broker"}, nil)
	descTx      = prometheus.NewDesc("tangram_mq_tx_checks_total", "Transaction check-backs sent.", []string{"broker"}, nil)
	descLag     = prometheus.NewDesc("tangram_mq_group_lag", "Messages a consumer group has not consumed.", []string{"broker", "group"}, nil)
	descTopic   = prometheus.NewDesc("tangram_mq_topic_messages_total", "Messages stored in a topic (the sum of its queues' end offsets).", []string{"broker", "topic"}, nil)
	descGroup   = prometheus.NewDesc("tangram_mq_group_consumed_total", "Messages a consumer group has consumed (the sum of its committed offsets).", []string{"broker", "group"}, nil)
	descBadConn = prometheus.NewDesc("tangram_mq_bad_connections_total", "Connections closed for protocol errors (garbage, oversized frames).", []string{"broker"}, nil)
	descRefused = prometheus.NewDesc("tangram_mq_refused_connections_total", "Connections refused at the connection limit.", []string{"broker"}, nil)
)

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descMsgsIn, descBytesIn, descMsgsOut, descBusy, descRetried, descDLQ, descTx, descLag, descTopic, descGroup, descBadConn, descRefused} {
		ch <- d
	}
	c.b.metrics.putHist.Describe(ch)
	c.b.metrics.flushHist.Describe(ch)
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m, n := c.b.metrics, c.b.cfg.Name
	for _, x := range []struct {
		d *prometheus.Desc
		v *atomic.Int64
	}{{descMsgsIn, &m.msgsIn}, {descBytesIn, &m.bytesIn}, {descMsgsOut, &m.msgsOut}, {descBusy, &m.busy},
		{descRetried, &m.retried}, {descDLQ, &m.dlq}, {descTx, &m.txChecks}} {
		ch <- prometheus.MustNewConstMetric(x.d, prometheus.CounterValue, float64(x.v.Load()), n)
	}
	for _, g := range c.b.Groups("") {
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, float64(g.Lag), n, g.Group)
		var consumed int64
		for _, o := range g.Offsets {
			consumed += max(o.Offset, 0)
		}
		ch <- prometheus.MustNewConstMetric(descGroup, prometheus.CounterValue, float64(consumed), n, g.Group)
	}
	for _, t := range c.b.Topics() {
		var stored int64
		for _, m := range t.Max {
			stored += m
		}
		ch <- prometheus.MustNewConstMetric(descTopic, prometheus.CounterValue, float64(stored), n, t.Name)
	}
	if srv := m.srv.Load(); srv != nil {
		ch <- prometheus.MustNewConstMetric(descBadConn, prometheus.CounterValue, float64(srv.BadConns()), n)
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(srv.RefusedConns()), n)
	}
	m.putHist.Collect(ch)
	m.flushHist.Collect(ch)
}

func sortGroups(gs []wire.GroupStats) {
	slices.SortFunc(gs, func(a, b wire.GroupStats) int { return strings.Compare(a.Group, b.Group) })
}
