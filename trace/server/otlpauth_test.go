package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/wait"
	"google.golang.org/protobuf/encoding/protowire"
)

// With Config.Authenticate, OTLP/HTTP and OTLP/gRPC exports need a valid
// bearer token: none or a refused one gets UNAUTHENTICATED (HTTP 401), an
// authenticator that cannot tell gets UNAVAILABLE (503, so exporters
// retry), and only the accepted exports are stored.
func TestOTLPAuthentication(t *testing.T) {
	authn := func(_ context.Context, token string) error {
		switch token {
		case "good":
			return nil
		case "down":
			return errors.New("the token store is unreachable")
		}
		return fmt.Errorf("%w: unknown token", ErrUnauthenticated)
	}
	s, _ := collector(t, Config{Authenticate: authn})
	send := func(ct, authz string, body []byte) (int, []byte) {
		t.Helper()
		if authz == "" {
			return post(t, s, body, ct, "")
		}
		return post(t, s, body, ct, "", "Authorization", authz)
	}
	// statusCode reads OTLP's Status message (protobuf): its code.
	statusCode := func(b []byte) int {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != 1 || typ != protowire.VarintType {
			return -1
		}
		v, m := protowire.ConsumeVarint(b[n:])
		if m < 0 {
			return -1
		}
		return int(v)
	}
	req := exportRequest(t, "authn", 0, 2) // 6 spans
	for _, c := range []struct {
		authz      string
		http, code int
	}{
		{"", 401, 16},
		{"Bearer wrong", 401, 16},
		{"Basic Z29vZDo=", 401, 16},
		{"Bearer down", 503, 14},
	} {
		if st, b := send("application/x-protobuf", c.authz, req); st != c.http || statusCode(b) != c.code {
			t.Errorf("OTLP/HTTP with %q: %d, status code %d (%q); want %d, %d", c.authz, st, statusCode(b), b, c.http, c.code)
		}
	}
	st, b := send("application/json", "", []byte(`{"resourceSpans":[]}`))
	var js struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(b, &js); st != 401 || err != nil || js.Code != 16 || js.Message == "" {
		t.Errorf("OTLP/HTTP JSON without a token: %d %q", st, b)
	}
	if st, b := send("application/x-protobuf", "bearer good", req); st != 200 {
		t.Fatalf("OTLP/HTTP with a good token: %d %q", st, b)
	}

	addr := s.OTLPGRPCAddr()
	for _, c := range []struct{ authz, status string }{
		{"", "16"}, {"Bearer wrong", "16"}, {"Bearer down", "14"},
	} {
		var hdr []string
		if c.authz != "" {
			hdr = []string{"Authorization", c.authz}
		}
		if _, st, msg := grpcCall(t, addr, grpcExportPath, exportRequest(t, "authn", 10, 2), false, hdr...); st != c.status || msg == "" {
			t.Errorf("OTLP/gRPC with %q: status %s %q, want %s with a reason", c.authz, st, msg, c.status)
		}
	}
	if _, st, msg := grpcCall(t, addr, grpcExportPath, exportRequest(t, "authn", 20, 2), false, "Authorization", "Bearer good"); st != "0" {
		t.Fatalf("OTLP/gRPC with a good token: status %s %q", st, msg)
	}
	// Only the two accepted exports (6 spans each) got in: the count is
	// taken before an export is answered.
	if n := s.Counts().Received; n != 12 {
		t.Fatalf("%d spans received, want 12: a refused export got in", n)
	}
	wait.For(t, 10*time.Second, "12 spans stored", func() bool { return s.Counts().Stored == 12 })
}
