package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
)

// grpcCall posts one gRPC message over HTTP/2 without TLS and returns the
// reply message and the status trailers.
func grpcCall(t *testing.T, addr, path string, msg []byte, gz bool, header ...string) (reply []byte, status, message string) {
	t.Helper()
	flag := byte(0)
	if gz {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(msg)
		zw.Close()
		msg, flag = b.Bytes(), 1
	}
	body := make([]byte, 5, 5+len(msg))
	body[0] = flag
	binary.BigEndian.PutUint32(body[1:], uint32(len(msg)))
	body = append(body, msg...)
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(context.Background(), "POST", "http://"+addr+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if gz {
		req.Header.Set("Grpc-Encoding", "gzip")
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/grpc" {
		t.Fatalf("reply: %s %d %q", resp.Proto, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	all, _ := io.ReadAll(resp.Body)
	if len(all) >= 5 {
		reply = all[5:]
	}
	status, message = resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message")
	if status == "" { // trailers-only: the status travels in the headers
		status, message = resp.Header.Get("Grpc-Status"), resp.Header.Get("Grpc-Message")
	}
	return reply, status, message
}

// TestGRPCReceiver: OTLP/gRPC exports, plain and gzipped, are stored; a
// bad message, an unknown method and a full queue get gRPC's answers.
func TestGRPCReceiver(t *testing.T) {
	hold := make(chan struct{})
	s, api := collector(t, Config{QueueSpans: 60}, func(s *Server) { s.pause = hold })
	addr := s.OTLPGRPCAddr()
	if reply, st, msg := grpcCall(t, addr, grpcExportPath, exportRequest(t, "grpc", 0, 10), false); st != "0" || len(reply) != 0 {
		t.Fatalf("export: status %s %q reply %x", st, msg, reply)
	}
	if _, st, msg := grpcCall(t, addr, grpcExportPath, exportRequest(t, "grpc", 10, 10), true); st != "0" {
		t.Fatalf("gzipped export: status %s %q", st, msg)
	}
	// The writer holds the first batch; the queue (60) has the second:
	// a third is refused as a partial success.
	reply, st, _ := grpcCall(t, addr, grpcExportPath, exportRequest(t, "grpc", 20, 10), false)
	if st != "0" || !bytes.Contains(reply, []byte("queue is full")) {
		t.Fatalf("a full queue: status %s reply %q", st, reply)
	}
	if _, st, msg := grpcCall(t, addr, grpcExportPath, []byte{0x0a, 0x05, 0x01}, false); st != "3" || msg == "" {
		t.Errorf("garbage: status %s %q, want 3 (invalid argument) with a reason", st, msg)
	}
	if _, st, _ := grpcCall(t, addr, "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export", nil, false); st != "12" {
		t.Errorf("an unknown method: status %s, want 12 (unimplemented)", st)
	}
	close(hold)
	wait.For(t, 10*time.Second, "60 spans stored", func() bool { return s.Counts().Stored == 60 })
	var stats map[string]any
	if get(t, api+"/api/v1/trace/stats", &stats) != 200 || stats["dropped"] != float64(30) {
		t.Errorf("stats %v", stats)
	}
}

// FuzzGRPCMessage: whatever a gRPC body holds, reading it gives a message
// or an error, never a panic or a message beyond the limit.
func FuzzGRPCMessage(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 3, 1, 2, 3}, false)
	f.Add([]byte{1, 0, 0, 0, 2, 0x1f, 0x8b}, true)
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff}, false)
	s := &Server{cfg: Config{MaxRequestBytes: 1 << 16}}
	f.Fuzz(func(t *testing.T, body []byte, gz bool) {
		req, _ := http.NewRequest("POST", "/", bytes.NewReader(body))
		if gz {
			req.Header.Set("Grpc-Encoding", "gzip")
		}
		msg, code, err := s.readGRPCMessage(req)
		if err == nil && (code != grpcOK || int64(len(msg)) > s.cfg.MaxRequestBytes) {
			t.Fatalf("code %d, %d bytes", code, len(msg))
		}
		if err != nil && code == grpcOK {
			t.Fatalf("an error with status OK: %v", err)
		}
	})
}
