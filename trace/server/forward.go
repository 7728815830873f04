package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// forwarder sends what the collector receives on to another OTLP/HTTP
// endpoint — Jaeger, Tempo, an OpenTelemetry Collector, another Tangram —
// as it was received (protobuf or JSON), so that the embedded store can
// sit beside a backend built for scale. Like the ingest queue it never
// makes a sender wait: requests that do not fit its bounded queue are
// dropped and counted.
type forwarder struct {
	url    string
	client *http.Client
	log    *slog.Logger
	queue  chan fwdRequest
	max    int64 // bytes queued at most
	queued atomic.Int64

	sent, failed, dropped atomic.Int64
	wg                    sync.WaitGroup
}

type fwdRequest struct {
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
		return nil, fmt.Errorf("trace: forward endpoint %q: want an OTLP/HTTP traces URL such as http://jaeger:4318/v1/traces", endpoint)
	}
	return &forwarder{url: endpoint, log: log, queue: make(chan fwdRequest, forwardRequests), max: forwardBytes,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}}, nil
}

// offer queues a request without waiting; false when it was dropped.
func (f *forwarder) offer(body []byte, contentType string) bool {
	if f.queued.Add(int64(len(body))) > f.max {
		f.queued.Add(-int64(len(body)))
		f.dropped.Add(1)
		return false
	}
	select {
	case f.queue <- fwdRequest{body, contentType}:
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
			f.log.Warn("trace: forwarding failed; request dropped", "endpoint", f.url, "err", err)
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
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.url, bytes.NewReader(r.body))
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
	return ForwardCounts{Endpoint: f.url, Sent: f.sent.Load(), Failed: f.failed.Load(), Dropped: f.dropped.Load()}
}
