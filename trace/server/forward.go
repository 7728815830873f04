package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// signal is an OTLP signal: what a forward endpoint takes.
type signal int

const (
	sigTraces signal = iota
	sigMetrics
	sigLogs
)

var signalPaths = [...]string{sigTraces: "/v1/traces", sigMetrics: "/v1/metrics", sigLogs: "/v1/logs"}

// forwarder sends what the collector receives on to another OTLP/HTTP
// endpoint — Jaeger, Tempo, an OpenTelemetry Collector, another Tangram —
// as it was received (protobuf or JSON), so that the embedded store can
// sit beside a backend built for scale. Like the ingest queue it never
// makes a sender wait: requests that do not fit its bounded queue are
// dropped and counted.
//
// An endpoint given as a signal's URL (…/v1/traces, …/v1/metrics,
// …/v1/logs) gets that signal only — Jaeger and Tempo take traces alone;
// any other path is a traces URL, as it always was. A collector's base
// URL (http://otelcol:4318) gets all three, each at its path.
type forwarder struct {
	endpoint string
	urls     [len(signalPaths)]string // "": the signal is not forwarded here
	client   *http.Client
	log      *slog.Logger
	queue    chan fwdRequest
	max      int64 // bytes queued at most
	queued   atomic.Int64

	sent, failed, dropped atomic.Int64
	wg                    sync.WaitGroup
}

type fwdRequest struct {
	url         string
	body        []byte
	contentType string
}

// forwardQueue bounds a forwarder's queue: requests and bytes.
const (
	forwardRequests = 1024
	forwardBytes    = 64 << 20
)

func newForwarder(endpoint string, log *slog.Logger) (*forwarder, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("trace: forward endpoint %q: want an OTLP/HTTP URL: a signal's, such as http://jaeger:4318/v1/traces, or a collector's base URL such as http://otelcol:4318 for traces, metrics and logs", endpoint)
	}
	f := &forwarder{endpoint: endpoint, log: log, queue: make(chan fwdRequest, forwardRequests), max: forwardBytes,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}}
	switch p := strings.TrimRight(u.Path, "/"); {
	case p == "":
		base := strings.TrimRight(endpoint, "/")
		for sig, path := range signalPaths {
			f.urls[sig] = base + path
		}
	case strings.HasSuffix(p, signalPaths[sigMetrics]):
		f.urls[sigMetrics] = endpoint
	case strings.HasSuffix(p, signalPaths[sigLogs]):
		f.urls[sigLogs] = endpoint
	default:
		f.urls[sigTraces] = endpoint
	}
	return f, nil
}

// takes says whether the endpoint takes sig.
func (f *forwarder) takes(sig signal) bool { return f.urls[sig] != "" }

// offer queues a request of sig without waiting; false when it was
// dropped (true, doing nothing, when the endpoint does not take sig).
func (f *forwarder) offer(sig signal, body []byte, contentType string) bool {
	if !f.takes(sig) {
		return true
	}
	if f.queued.Add(int64(len(body))) > f.max {
		f.queued.Add(-int64(len(body)))
		f.dropped.Add(1)
		return false
	}
	select {
	case f.queue <- fwdRequest{f.urls[sig], body, contentType}:
		return true
	default:
		f.queued.Add(-int64(len(body)))
		f.dropped.Add(1)
		return false
	}
}

// run sends until stop is closed, each request retried (429, 502, 503,
// 504, connection errors) for at most retryFor; then what is queued, for
// two seconds at most — the rest is dropped and counted.
func (f *forwarder) run(stop <-chan struct{}, retryFor time.Duration) {
	defer f.wg.Done()
	for {
		select {
		case r := <-f.queue:
			f.send(r, time.Now().Add(retryFor), stop)
		case <-stop:
			deadline := time.Now().Add(2 * time.Second)
			for {
				select {
				case r := <-f.queue:
					if time.Now().After(deadline) {
						f.queued.Add(-int64(len(r.body)))
						f.dropped.Add(1)
						continue
					}
					f.send(r, deadline, nil)
				default:
					return
				}
			}
		}
	}
}

func (f *forwarder) send(r fwdRequest, deadline time.Time, stop <-chan struct{}) {
	defer f.queued.Add(-int64(len(r.body)))
	backoff := 100 * time.Millisecond
	for {
		retry, err := f.post(r, deadline)
		if err == nil {
			f.sent.Add(1)
			return
		}
		if !retry || time.Now().Add(backoff).After(deadline) {
			f.failed.Add(1)
			f.log.Warn("trace: forwarding failed; request dropped", "endpoint", r.url, "err", err)
			return
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-stop: // stopping: one last try within the drain's time
			t.Stop()
			if d := time.Now().Add(2 * time.Second); d.Before(deadline) {
				deadline = d
			}
			stop = nil
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// post sends one request by deadline; retry says whether OTLP allows
// another try.
func (f *forwarder) post(r fwdRequest, deadline time.Time) (retry bool, err error) {
	if d := time.Now().Add(10 * time.Second); d.Before(deadline) {
		deadline = d // one attempt takes 10 s at most
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url, bytes.NewReader(r.body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", r.contentType)
	resp, err := f.client.Do(req)
	if err != nil {
		return true, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch resp.StatusCode {
	case http.StatusOK:
		return false, nil
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true, fmt.Errorf("%s", resp.Status)
	}
	return false, fmt.Errorf("%s", resp.Status)
}

// ForwardCounts are a forwarding endpoint's counters (requests).
type ForwardCounts struct {
	Endpoint              string
	Sent, Failed, Dropped int64
}

func (f *forwarder) counts() ForwardCounts {
	return ForwardCounts{Endpoint: f.endpoint, Sent: f.sent.Load(), Failed: f.failed.Load(), Dropped: f.dropped.Load()}
}
