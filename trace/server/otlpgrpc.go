package server

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/tangram-dev/tangram/trace/otlp"
)

// The gRPC method OTLP exporters call, and gRPC's status codes used here.
const (
	grpcExportPath  = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
	grpcMetricsPath = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
	grpcLogsPath    = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

	grpcOK                = 0
	grpcInvalidArgument   = 3
	grpcResourceExhausted = 8
	grpcUnimplemented     = 12
	grpcUnavailable       = 14
	grpcUnauthenticated   = 16
)

// receiveGRPC is OTLP/gRPC's TraceService/Export, MetricsService/Export
// and LogsService/Export,
// spoken over net/http's HTTP/2: a request of one length-prefixed message
// (gzip-compressed when the exporter says so), a reply of one message —
// empty, or what was refused as a partial success — and gRPC's status in
// the trailers.
func (s *Server) receiveGRPC(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/grpc")
	w.Header().Set("Trailer", "Grpc-Status, Grpc-Message")
	if r.Method != http.MethodPost || r.ProtoMajor != 2 {
		grpcStatus(w, grpcUnimplemented, "OTLP/gRPC wants HTTP/2 POST")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/grpc" && !strings.HasPrefix(ct, "application/grpc+proto") && !strings.HasPrefix(ct, "application/grpc;") {
		grpcStatus(w, grpcInvalidArgument, fmt.Sprintf("content type %q: want application/grpc", ct))
		return
	}
	switch r.URL.Path {
	case grpcExportPath, grpcMetricsPath, grpcLogsPath:
	default:
		grpcStatus(w, grpcUnimplemented, "unknown method "+r.URL.Path+"; this collector serves "+grpcExportPath+", "+grpcMetricsPath+" and "+grpcLogsPath)
		return
	}
	msg, code, err := s.readGRPCMessage(r)
	if err != nil {
		grpcStatus(w, code, err.Error())
		return
	}
	var reply []byte
	switch r.URL.Path {
	case grpcLogsPath:
		records, untraced, err := otlp.DecodeLogs(nil, msg)
		if err != nil {
			grpcStatus(w, grpcInvalidArgument, err.Error())
			return
		}
		s.forward(sigLogs, msg, "application/x-protobuf")
		if rejected := s.IngestLogs(records, untraced); rejected > 0 {
			reply = partialSuccess(rejected, untracedLogs)
		}
	case grpcMetricsPath:
		rms, err := otlp.DecodeMetrics(msg)
		if err != nil {
			grpcStatus(w, grpcInvalidArgument, err.Error())
			return
		}
		s.forward(sigMetrics, msg, "application/x-protobuf")
		if rejected := s.IngestMetrics(rms); rejected > 0 {
			reply = partialSuccess(rejected, "data points without a value, beyond the collector's series bound or outside its window")
		}
	default:
		spans, err := otlp.DecodeTraces(nil, msg)
		if err != nil {
			grpcStatus(w, grpcInvalidArgument, err.Error())
			return
		}
		s.forward(sigTraces, msg, "application/x-protobuf") // the same message, over OTLP/HTTP
		if rejected := s.Ingest(spans); rejected > 0 {
			reply = partialSuccess(rejected, "the collector's ingest queue is full: spans dropped")
		}
	}
	frame := make([]byte, 5, 5+len(reply))
	binary.BigEndian.PutUint32(frame[1:], uint32(len(reply)))
	w.Write(append(frame, reply...))
	grpcStatus(w, grpcOK, "")
}

// readGRPCMessage reads the request's one message.
func (s *Server) readGRPCMessage(r *http.Request) ([]byte, int, error) {
	var head [5]byte
	if _, err := io.ReadFull(r.Body, head[:]); err != nil {
		return nil, grpcInvalidArgument, fmt.Errorf("reading the message header: %w", err)
	}
	n := int64(binary.BigEndian.Uint32(head[1:]))
	if n > s.cfg.MaxRequestBytes {
		return nil, grpcResourceExhausted, fmt.Errorf("message of %d bytes, more than %d", n, s.cfg.MaxRequestBytes)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r.Body, msg); err != nil {
		return nil, grpcInvalidArgument, fmt.Errorf("reading a message of %d bytes: %w", n, err)
	}
	switch head[0] {
	case 0:
		return msg, grpcOK, nil
	case 1:
		if enc := r.Header.Get("Grpc-Encoding"); enc != "gzip" {
			return nil, grpcUnimplemented, fmt.Errorf("message compressed with %q: want gzip", enc)
		}
		zr, err := gzip.NewReader(bytes.NewReader(msg))
		if err != nil {
			return nil, grpcInvalidArgument, fmt.Errorf("gzip message: %w", err)
		}
		out, err := io.ReadAll(io.LimitReader(zr, s.cfg.MaxRequestBytes+1))
		if err != nil {
			return nil, grpcInvalidArgument, fmt.Errorf("gzip message: %w", err)
		}
		if int64(len(out)) > s.cfg.MaxRequestBytes {
			return nil, grpcResourceExhausted, errors.New("message larger than the limit once unzipped")
		}
		return out, grpcOK, nil
	}
	return nil, grpcInvalidArgument, fmt.Errorf("message flag %d: want 0 or 1", head[0])
}

// grpcStatus sets gRPC's status trailers (sent after the body; with no
// body, a trailers-only reply).
func grpcStatus(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Grpc-Status", strconv.Itoa(code))
	if msg != "" {
		w.Header().Set("Grpc-Message", url.PathEscape(msg))
	}
}

// partialSuccess is an export reply refusing rejected spans.
func partialSuccess(rejected int, msg string) []byte {
	var ps []byte
	ps = protowire.AppendTag(ps, 1, protowire.VarintType)
	ps = protowire.AppendVarint(ps, uint64(rejected))
	ps = protowire.AppendTag(ps, 2, protowire.BytesType)
	ps = protowire.AppendString(ps, msg)
	out := protowire.AppendTag(nil, 1, protowire.BytesType)
	return protowire.AppendBytes(out, ps)
}
