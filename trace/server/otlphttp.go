package server

import (
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"

	"github.com/tangram-dev/tangram/trace/otlp"
	"github.com/tangram-dev/tangram/trace/store"
)

// receiveHTTP is OTLP/HTTP's POST /v1/traces: protobuf or JSON, gzip or
// identity; the reply in the request's encoding, with the refused spans
// as a partial success.
func (s *Server) receiveHTTP(w http.ResponseWriter, r *http.Request) {
	b, isJSON, ok := s.readHTTPBody(w, r)
	if !ok {
		return
	}
	var spans []store.Span
	var err error
	if isJSON {
		spans, err = otlp.DecodeTracesJSON(nil, b)
	} else {
		spans, err = otlp.DecodeTraces(nil, b)
	}
	if err != nil {
		writeStatus(w, http.StatusBadRequest, isJSON, err.Error())
		return
	}
	s.forward(sigTraces, b, contentType(isJSON))
	rejected := s.Ingest(spans)
	msg := ""
	if rejected > 0 {
		msg = "the collector's ingest queue is full: spans dropped"
	}
	writeReply(w, isJSON, "rejectedSpans", rejected, msg)
}

// readHTTPBody reads an OTLP/HTTP request's body — protobuf or JSON, gzip
// or identity, bounded — answering the sender itself when it cannot.
func (s *Server) readHTTPBody(w http.ResponseWriter, r *http.Request) (b []byte, isJSON, ok bool) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	isJSON = ct == "application/json"
	if !isJSON && ct != "application/x-protobuf" {
		writeStatus(w, http.StatusUnsupportedMediaType, false, fmt.Sprintf("content type %q: want application/x-protobuf or application/json", ct))
		return nil, false, false
	}
	var body io.Reader = http.MaxBytesReader(w, r.Body, s.cfg.MaxRequestBytes)
	switch r.Header.Get("Content-Encoding") {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			writeStatus(w, http.StatusBadRequest, isJSON, "gzip body: "+err.Error())
			return nil, isJSON, false
		}
		defer zr.Close()
		body = io.LimitReader(zr, s.cfg.MaxRequestBytes+1)
	default:
		writeStatus(w, http.StatusUnsupportedMediaType, isJSON, fmt.Sprintf("content encoding %q: want gzip or none", r.Header.Get("Content-Encoding")))
		return nil, isJSON, false
	}
	b, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeStatus(w, http.StatusRequestEntityTooLarge, isJSON, fmt.Sprintf("request larger than %d bytes", s.cfg.MaxRequestBytes))
			return nil, isJSON, false
		}
		writeStatus(w, http.StatusBadRequest, isJSON, "read body: "+err.Error())
		return nil, isJSON, false
	}
	if int64(len(b)) > s.cfg.MaxRequestBytes {
		writeStatus(w, http.StatusRequestEntityTooLarge, isJSON, fmt.Sprintf("request larger than %d bytes once unzipped", s.cfg.MaxRequestBytes))
		return nil, isJSON, false
	}
	return b, isJSON, true
}

// receiveMetricsHTTP is OTLP/HTTP's POST /v1/metrics.
func (s *Server) receiveMetricsHTTP(w http.ResponseWriter, r *http.Request) {
	b, isJSON, ok := s.readHTTPBody(w, r)
	if !ok {
		return
	}
	var rms []*metricspb.ResourceMetrics
	var err error
	if isJSON {
		rms, err = otlp.DecodeMetricsJSON(b)
	} else {
		rms, err = otlp.DecodeMetrics(b)
	}
	if err != nil {
		writeStatus(w, http.StatusBadRequest, isJSON, err.Error())
		return
	}
	s.forward(sigMetrics, b, contentType(isJSON))
	writeReply(w, isJSON, "rejectedDataPoints", s.IngestMetrics(rms), "data points without a value, beyond the collector's series bound or outside its window")
}

// untracedLogs says why log records were refused.
const untracedLogs = "log records without a trace ID are not kept (the collector keeps logs with their traces), or the ingest queue is full"

// receiveLogsHTTP is OTLP/HTTP's POST /v1/logs.
func (s *Server) receiveLogsHTTP(w http.ResponseWriter, r *http.Request) {
	b, isJSON, ok := s.readHTTPBody(w, r)
	if !ok {
		return
	}
	var records []store.Span
	var untraced int
	var err error
	if isJSON {
		records, untraced, err = otlp.DecodeLogsJSON(nil, b)
	} else {
		records, untraced, err = otlp.DecodeLogs(nil, b)
	}
	if err != nil {
		writeStatus(w, http.StatusBadRequest, isJSON, err.Error())
		return
	}
	s.forward(sigLogs, b, contentType(isJSON))
	writeReply(w, isJSON, "rejectedLogRecords", s.IngestLogs(records, untraced), untracedLogs)
}

// contentType is an OTLP/HTTP body's media type.
func contentType(isJSON bool) string {
	if isJSON {
		return "application/json"
	}
	return "application/x-protobuf"
}

// writeReply answers an accepted export: empty, or with a partial success
// counting what was refused (countKey names it in JSON).
func writeReply(w http.ResponseWriter, isJSON bool, countKey string, rejected int, msg string) {
	if isJSON {
		w.Header().Set("Content-Type", "application/json")
		reply := map[string]any{}
		if rejected > 0 {
			reply["partialSuccess"] = map[string]string{countKey: strconv.Itoa(rejected), "errorMessage": msg}
		}
		json.NewEncoder(w).Encode(reply)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	if rejected > 0 {
		w.Write(partialSuccess(rejected, msg))
	}
}

// writeStatus answers with an error as OTLP/HTTP says: a google.rpc.Status
// (code, message) in the request's encoding.
func writeStatus(w http.ResponseWriter, status int, isJSON bool, msg string) {
	code := 3 // INVALID_ARGUMENT
	if status == http.StatusRequestEntityTooLarge {
		code = 8 // RESOURCE_EXHAUSTED
	}
	writeCode(w, status, code, isJSON, msg)
}

// writeCode writes OTLP's Status message (gRPC code and message) with
// HTTP status status.
func writeCode(w http.ResponseWriter, status, code int, isJSON bool, msg string) {
	if isJSON {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg})
		return
	}
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(code))
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, msg)
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.WriteHeader(status)
	w.Write(b)
}
