package server

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/trace"
)

// net/http's connection goroutine lingers up to 500 ms after a reply sent
// before the request body was read (a refused export): net/http's own,
// ended by itself.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("net/http.(*conn).closeWriteAndWait"))
}

// collector starts a collector on loopback and its query API behind an
// admin principal.
func collector(t *testing.T, cfg Config, beforeStart ...func(*Server)) (*Server, string) {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.OTLPHTTPAddr == "" {
		cfg.OTLPHTTPAddr = "127.0.0.1:0"
	}
	if cfg.OTLPGRPCAddr == "" {
		cfg.OTLPGRPCAddr = "127.0.0.1:0"
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range beforeStart {
		f(s)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	admin := &auth.Principal{Name: "root", Bindings: []auth.Binding{{Role: auth.Admin, Env: "*", App: "*", NS: "*"}}}
	s.Mount(mux, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "" {
				r = r.WithContext(auth.WithPrincipal(r.Context(), admin))
			}
			h.ServeHTTP(w, r)
		})
	})
	api := httptest.NewServer(mux)
	t.Cleanup(func() {
		api.Close()
		s.Close()
	})
	return s, api.URL
}

// exportRequest is an OTLP request of n traces of 3 spans each for
// service svc, trace IDs from base.
func exportRequest(t *testing.T, svc string, base, n int) []byte {
	t.Helper()
	var spans []*tracepb.Span
	for i := range n {
		tid := make([]byte, 16)
		tid[0], tid[1], tid[15] = byte(base+i), byte((base+i)>>8), 0xee
		for j := range 3 {
			sp := &tracepb.Span{TraceId: tid, SpanId: []byte{byte(j + 1), 0, 0, 0, 0, 0, 0, 1}, Name: fmt.Sprintf("op%d", j),
				Kind: tracepb.Span_SPAN_KIND_SERVER, StartTimeUnixNano: uint64(time.Now().UnixNano()), EndTimeUnixNano: uint64(time.Now().Add(time.Duration(j+1) * time.Millisecond).UnixNano()),
				Attributes: []*commonpb.KeyValue{{Key: "n", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(base + i)}}}}}
			if j > 0 {
				sp.ParentSpanId = []byte{byte(j), 0, 0, 0, 0, 0, 0, 1}
			}
			if j == 2 && (base+i)%2 == 0 {
				sp.Status = &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "failed"}
			}
			spans = append(spans, sp)
		}
	}
	rs := &tracepb.ResourceSpans{
		Resource:   &resourcepb.Resource{Attributes: []*commonpb.KeyValue{{Key: "service.name", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: svc}}}}},
		ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
	}
	m, err := proto.Marshal(rs)
	if err != nil {
		t.Fatal(err)
	}
	return protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), m)
}

func post(t *testing.T, s *Server, body []byte, ct, enc string, header ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+s.OTLPAddr()+"/v1/traces", bytes.NewReader(body))
	req.Header.Set("Content-Type", ct)
	if enc != "" {
		req.Header.Set("Content-Encoding", enc)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func get(t *testing.T, url string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil && resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func tid(n int) string {
	b := make([]byte, 16)
	b[0], b[1], b[15] = byte(n), byte(n>>8), 0xee
	return hex.EncodeToString(b)
}

// TestIngestAndQuery: OTLP/HTTP protobuf, gzipped protobuf and JSON go in;
// traces, searches and stats come out of the query API.
func TestIngestAndQuery(t *testing.T) {
	s, api := collector(t, Config{})
	if code, b := post(t, s, exportRequest(t, "checkout", 0, 10), "application/x-protobuf", ""); code != 200 || len(b) != 0 {
		t.Fatalf("protobuf export: %d %x", code, b)
	}
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	zw.Write(exportRequest(t, "stock", 100, 10))
	zw.Close()
	if code, b := post(t, s, zb.Bytes(), "application/x-protobuf", "gzip"); code != 200 {
		t.Fatalf("gzip export: %d %s", code, b)
	}
	doc := `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"python-app"}}]},
		"scopeSpans":[{"spans":[{"traceId":"` + tid(500) + `","spanId":"0100000000000001","name":"GET /","kind":2,
		"startTimeUnixNano":"` + fmt.Sprint(time.Now().UnixNano()) + `","endTimeUnixNano":"` + fmt.Sprint(time.Now().Add(time.Second).UnixNano()) + `"}]}]}]}`
	if code, b := post(t, s, []byte(doc), "application/json", ""); code != 200 || strings.TrimSpace(string(b)) != "{}" {
		t.Fatalf("JSON export: %d %s", code, b)
	}
	wait.For(t, 10*time.Second, "61 spans stored", func() bool { return s.Counts().Stored == 61 })

	var tr trace.TraceReply
	if code := get(t, api+"/api/v1/trace/traces/"+tid(104), &tr); code != 200 || len(tr.Spans) != 3 {
		t.Fatalf("trace 104: %d, %+v", code, tr)
	}
	if sp := tr.Spans[2]; sp.Service != "stock" || sp.Name != "op2" || sp.ParentID != "0200000000000001" || sp.Status != "error" || sp.Kind != "server" || sp.Attributes["n"] != float64(104) {
		t.Fatalf("trace 104's last span: %+v", sp)
	}
	if code := get(t, api+"/api/v1/trace/traces/"+tid(999), nil); code != 404 {
		t.Fatalf("an unknown trace: %d", code)
	}
	if code := get(t, api+"/api/v1/trace/traces/xyz", nil); code != 400 {
		t.Fatalf("a bad trace ID: %d", code)
	}
	var sr trace.SearchReply
	if code := get(t, api+"/api/v1/trace/traces?service=checkout&errors=true&limit=100", &sr); code != 200 || len(sr.Traces) != 5 {
		t.Fatalf("error traces of checkout: %d, %d found", code, len(sr.Traces))
	}
	if code := get(t, api+"/api/v1/trace/traces?min_duration=500ms", &sr); code != 200 || len(sr.Traces) != 1 || sr.Traces[0].Service != "python-app" {
		t.Fatalf("slow traces: %+v", sr)
	}
	if code := get(t, api+"/api/v1/trace/traces?attr=n=7", &sr); code != 200 || len(sr.Traces) != 1 || sr.Traces[0].TraceID != tid(7) {
		t.Fatalf("by attribute: %+v", sr)
	}
	for _, bad := range []string{"min_duration=soon", "limit=0", "errors=maybe", "attr=novalue", "start=yesterday"} {
		if code := get(t, api+"/api/v1/trace/traces?"+bad, nil); code != 400 {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	var st trace.StatsReply
	if get(t, api+"/api/v1/trace/stats", &st); st.Received != 61 || st.Stored != 61 || st.Spans != 61 || st.Dropped != 0 {
		t.Fatalf("stats: %+v", st)
	}
	// Without a principal: refused.
	resp, err := http.Get(api + "/api/v1/trace/stats")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("stats without a token: %d", resp.StatusCode)
	}
}

// TestBadExports: refused with OTLP's status, the reason in the request's
// encoding, nothing stored.
func TestBadExports(t *testing.T) {
	s, _ := collector(t, Config{MaxRequestBytes: 4096})
	for _, c := range []struct {
		body     []byte
		ct, enc  string
		code     int
		contains string
	}{
		{[]byte("x"), "text/plain", "", 415, "content type"},
		{[]byte("{"), "application/json", "", 400, "unexpected end"},
		{[]byte{0x0a, 0x05, 0x12}, "application/x-protobuf", "", 400, "otlp"},
		{[]byte("not gzip"), "application/x-protobuf", "gzip", 400, "gzip"},
		{[]byte("x"), "application/x-protobuf", "br", 415, "content encoding"},
		{bytes.Repeat([]byte{0}, 5000), "application/x-protobuf", "", 413, "larger than"},
	} {
		code, b := post(t, s, c.body, c.ct, c.enc)
		if code != c.code || !strings.Contains(string(b), c.contains) {
			t.Errorf("%s %s: %d %q, want %d and %q", c.ct, c.enc, code, b, c.code, c.contains)
		}
	}
	if c := s.Counts(); c.Received != 0 {
		t.Fatalf("counts after bad exports: %+v", c)
	}
}

// TestFullQueueNeverBlocks: with the writer held, exports past the queue
// still answer — the spans refused, counted, and reported as a partial
// success — and once the writer runs, what was accepted is stored.
func TestFullQueueNeverBlocks(t *testing.T) {
	hold := make(chan struct{})
	s, _ := collector(t, Config{QueueSpans: 60}, func(s *Server) { s.pause = hold })
	var codes []int
	var replies [][]byte
	for i := range 10 { // 30 spans each: the queue holds two (one in the held writer's hands)
		code, b := post(t, s, exportRequest(t, "svc", i*10, 10), "application/x-protobuf", "")
		codes, replies = append(codes, code), append(replies, b)
	}
	accepted, refused := 0, 0
	for i, b := range replies {
		if codes[i] != 200 {
			t.Fatalf("export %d: %d", i, codes[i])
		}
		if len(b) == 0 {
			accepted++
			continue
		}
		// partial_success{rejected_spans: 30, error_message}
		if !bytes.Contains(b, []byte("queue is full")) || b[0] != 0x0a || b[2] != 0x08 || b[3] != 30 {
			t.Fatalf("export %d reply %x: want a partial success of 30 rejected spans", i, b)
		}
		refused++
	}
	c := s.Counts()
	if accepted < 2 || refused < 7 || c.Dropped != int64(30*refused) || c.Received != 300 {
		t.Fatalf("accepted %d, refused %d, counts %+v", accepted, refused, c)
	}
	close(hold) // a closed pause holds nothing
	wait.For(t, 10*time.Second, "the accepted spans stored", func() bool { return s.Counts().Stored == int64(30*accepted) })
}

// TestRestartKeepsSpans: spans written before Close are there after a
// new collector opens the same directory; Close writes what was queued.
func TestRestartKeepsSpans(t *testing.T) {
	dir := t.TempDir()
	s, _ := collector(t, Config{Dir: dir})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			post(t, s, exportRequest(t, "svc", i*50, 20), "application/x-protobuf", "")
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c := s.Counts(); c.Stored != 240 || c.Queued != 0 {
		t.Fatalf("after Close: %+v", c)
	}
	if rejected := s.Ingest(nil); rejected != 0 {
		t.Fatal("an empty ingest after Close")
	}
	s2, api := collector(t, Config{Dir: dir})
	var tr trace.TraceReply
	if code := get(t, api+"/api/v1/trace/traces/"+tid(165), &tr); code != 200 || len(tr.Spans) != 3 {
		t.Fatalf("after a restart: %d, %d spans", code, len(tr.Spans))
	}
	if st := s2.Store().Stats(); st.Spans != 240 {
		t.Fatalf("after a restart: %+v", st)
	}
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "Dir") {
		t.Fatalf("no Dir: %v", err)
	}
	if _, err := New(Config{Dir: t.TempDir(), QueueSpans: -1}); err == nil {
		t.Fatal("negative queue accepted")
	}
	s, err := New(Config{Dir: t.TempDir(), OTLPHTTPAddr: "off", OTLPGRPCAddr: "off"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.OTLPAddr() != "" || s.OTLPGRPCAddr() != "" {
		t.Fatal("a receiver with OTLPHTTPAddr and OTLPGRPCAddr off")
	}
	s.Close()
	if err := s.Start(context.Background()); err != ErrServerClosed {
		t.Fatalf("Start after Close: %v", err)
	}
}

// TestCloseWaitsForShutdown: a Close racing a Shutdown returns only once
// the stop is complete (every goroutine ended, the store closed).
func TestCloseWaitsForShutdown(t *testing.T) {
	s, _ := collector(t, Config{})
	post(t, s, exportRequest(t, "svc", 0, 5), "application/x-protobuf", "")
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if c := s.Counts(); c.Stored != 15 || c.Queued != 0 {
		t.Fatalf("Close returned before the stop finished: %+v", c)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store().Trace([16]byte{}); err == nil {
		t.Fatal("the store is still open after Close")
	}
}
