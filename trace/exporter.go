package trace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/encoding/protowire"
)

// ErrExporterClosed is returned by an export after Shutdown.
var ErrExporterClosed = errors.New("trace: exporter shut down")

// Exporter sends finished spans to an OTLP/HTTP endpoint — Tangram's
// collector or any other (the OpenTelemetry Collector, Jaeger, Tempo) — as
// protobuf. It is an OpenTelemetry SDK SpanExporter: the SDK's batch
// processor calls it from its own goroutine, so the application never
// waits on the network. It retries what OTLP says to retry (429, 502, 503,
// 504 and connection errors, honouring Retry-After) until the export's
// context ends, and counts what the endpoint rejects (partial success).
type Exporter struct {
	url     string
	headers map[string]string
	client  *http.Client
	log     *slog.Logger

	closed   atomic.Bool
	rejected atomic.Int64
	sent     atomic.Int64
	bufs     sync.Pool
}

// NewExporter makes an exporter posting to endpoint, a full URL such as
// http://127.0.0.1:4318/v1/traces, with headers on every request (an
// authorization header, say). A nil logger logs nothing.
func NewExporter(endpoint string, headers map[string]string, log *slog.Logger) (*Exporter, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("trace: exporter endpoint %q: want an http(s) URL such as http://127.0.0.1:4318/v1/traces", endpoint)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Exporter{url: endpoint, headers: headers, log: log,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute}}}, nil
}

// Sent is how many spans the endpoint accepted; Rejected how many it
// refused (OTLP partial success: its queue was full, say).
func (e *Exporter) Sent() int64     { return e.sent.Load() }
func (e *Exporter) Rejected() int64 { return e.rejected.Load() }

// ExportSpans sends one batch, retrying while ctx lasts.
func (e *Exporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.closed.Load() {
		return ErrExporterClosed
	}
	if len(spans) == 0 {
		return nil
	}
	bp, _ := e.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	body := AppendExportRequest((*bp)[:0], spans)
	defer func() { *bp = body; e.bufs.Put(bp) }()
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		wait, err := e.post(ctx, body, len(spans))
		if err == nil {
			return nil
		}
		if wait < 0 { // not retryable
			return err
		}
		if wait == 0 {
			wait = backoff
			backoff = min(2*backoff, 5*time.Second)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("trace: export of %d spans gave up after %d attempts: %w (last: %w)", len(spans), attempt, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// post sends body once. It returns how long to wait before a retry (0:
// back off as usual; -1: do not retry) with the error.
func (e *Exporter) post(ctx context.Context, body []byte, n int) (time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url, bytes.NewReader(body))
	if err != nil {
		return -1, fmt.Errorf("trace: export: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	for k, v := range e.headers {
		req.Header.Set(k, v)
	}
	resp, err := e.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return -1, fmt.Errorf("trace: export to %s: %w", e.url, err)
		}
		return 0, fmt.Errorf("trace: export to %s: %w", e.url, err)
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode == http.StatusOK:
		rejected, msg := partialSuccess(reply)
		e.sent.Add(int64(n) - rejected)
		if rejected > 0 {
			e.rejected.Add(rejected)
			e.log.Warn("trace: the collector rejected spans", "rejected", rejected, "of", n, "reason", msg)
		}
		return 0, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusBadGateway ||
		resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusGatewayTimeout:
		var wait time.Duration
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			wait = time.Duration(s) * time.Second
		}
		return wait, fmt.Errorf("trace: export to %s: %s", e.url, resp.Status)
	default:
		return -1, fmt.Errorf("trace: export to %s: %s: %s", e.url, resp.Status, statusMessage(reply))
	}
}

// partialSuccess reads ExportTraceServiceResponse.partial_success.
func partialSuccess(b []byte) (rejected int64, msg string) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, ""
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, ""
			}
			for len(v) > 0 {
				f, t, m := protowire.ConsumeTag(v)
				if m < 0 {
					return rejected, msg
				}
				v = v[m:]
				switch {
				case f == 1 && t == protowire.VarintType:
					x, k := protowire.ConsumeVarint(v)
					if k < 0 {
						return rejected, msg
					}
					rejected, v = int64(x), v[k:]
				case f == 2 && t == protowire.BytesType:
					s, k := protowire.ConsumeBytes(v)
					if k < 0 {
						return rejected, msg
					}
					msg, v = string(s), v[k:]
				default:
					k := protowire.ConsumeFieldValue(f, t, v)
					if k < 0 {
						return rejected, msg
					}
					v = v[k:]
				}
			}
			return rejected, msg
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, ""
		}
		b = b[n:]
	}
	return 0, ""
}

// statusMessage is the message of a google.rpc.Status reply (field 2),
// or the reply's start as text.
func statusMessage(b []byte) string {
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			break
		}
		rest = rest[n:]
		if num == 2 && typ == protowire.BytesType {
			if v, n := protowire.ConsumeBytes(rest); n >= 0 {
				return string(v)
			}
			break
		}
		if n = protowire.ConsumeFieldValue(num, typ, rest); n < 0 {
			break
		}
		rest = rest[n:]
	}
	if len(b) > 200 {
		b = b[:200]
	}
	return string(bytes.ToValidUTF8(b, []byte("?")))
}

// Shutdown stops the exporter; later exports fail with ErrExporterClosed.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.closed.Store(true)
	e.client.CloseIdleConnections()
	return nil
}
