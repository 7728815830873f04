package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/errcode"
)

var (
	errMissing = errcode.New(errcode.NotFound, "thing: not found")
	errStale   = errcode.New(errcode.Conflict, "thing: version conflict")
)

type staleError struct{ current int64 }

func (e *staleError) Error() string     { return fmt.Sprintf("stale: current is %d", e.current) }
func (e *staleError) Unwrap() error     { return errStale }
func (e *staleError) ErrorDetails() any { return map[string]int64{"current_version": e.current} }

func TestFrom(t *testing.T) {
	for _, c := range []struct {
		name   string
		err    error
		status int
		code   string
		msg    string
	}{
		{"api error as is", api.BadRequest("limit %d", 3), 400, "bad_request", "limit 3"},
		{"wrapped sentinel", fmt.Errorf("get: %w", fmt.Errorf("%w: app %q", errMissing, "shop")), 404, "not_found", `get: app "shop"`},
		{"details", &staleError{7}, 409, "conflict", "stale: current is 7"},
		{"timeout", fmt.Errorf("query: %w", context.DeadlineExceeded), 504, "timeout", "query: context deadline exceeded"},
		{"canceled", context.Canceled, 499, "canceled", "context canceled"},
		{"internal text is not leaked", errors.New("dial tcp 10.0.0.1: secret"), 500, "internal", "internal error"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := api.From(c.err)
			if got.Status != c.status || got.Code != c.code || got.Message != c.msg {
				t.Fatalf("From = %d %s %q, want %d %s %q", got.Status, got.Code, got.Message, c.status, c.code, c.msg)
			}
		})
	}
	if d := api.From(&staleError{7}).Details; fmt.Sprint(d) != "map[current_version:7]" {
		t.Fatalf("details = %v", d)
	}
}

// TestEnvelopeRoundTrip serves errors through Handler and reads them with
// the client: the envelope carries the code, and errors.Is matches the
// component's sentinel on the client side.
func TestEnvelopeRoundTrip(t *testing.T) {
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, nil))
	mux := http.NewServeMux()
	mux.Handle("GET /missing", api.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		return fmt.Errorf("%w: app %q", errMissing, "shop")
	}))
	mux.Handle("GET /boom", api.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		return errors.New("disk on fire")
	}))
	mux.Handle("GET /ok", api.Handler(log, func(w http.ResponseWriter, r *http.Request) error {
		api.WriteJSON(w, 200, map[string]string{"a": "b"})
		return nil
	}))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := apiclient.New(srv.URL, "")
	ctx := context.Background()

	err := c.Do(ctx, "GET", "/missing", nil, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "not_found" || ae.Message != `app "shop"` {
		t.Fatalf("missing: %#v", err)
	}
	if !errors.Is(err, errMissing) || errors.Is(err, errStale) {
		t.Fatal("errors.Is does not match the sentinel by code")
	}
	if code, _ := errcode.Of(err); code != errcode.NotFound {
		t.Fatalf("code = %s", code)
	}
	if strings.Contains(logged.String(), "shop") {
		t.Fatal("a client error was logged as a failure")
	}

	err = c.Do(ctx, "GET", "/boom", nil, nil)
	if !errors.As(err, &ae) || ae.Status != 500 || strings.Contains(ae.Message, "fire") {
		t.Fatalf("boom: %v", err)
	}
	if !strings.Contains(logged.String(), "disk on fire") {
		t.Fatal("an internal error was not logged")
	}

	var out map[string]string
	if err := c.Do(ctx, "GET", "/ok", nil, &out); err != nil || out["a"] != "b" {
		t.Fatalf("ok: %v %v", out, err)
	}
}

func TestDecode(t *testing.T) {
	type req struct {
		N int `json:"n"`
	}
	for _, c := range []struct {
		body, want string
	}{
		{``, "empty"},
		{`{"n":`, "not valid JSON"},
		{`{"n":"x"}`, `field "n"`},
		{`{"m":1}`, "unknown field"},
		{`{"n":1}{}`, "after the JSON object"},
		{`{"n":"` + strings.Repeat("a", api.MaxBody) + `"}`, "over"},
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(c.body))
		var v req
		err := api.Decode(r, &v)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Decode(%.20q) = %v, want %q", c.body, err, c.want)
		}
	}
	r := httptest.NewRequest("POST", "/", strings.NewReader(`{"n":4}`))
	var v req
	if err := api.Decode(r, &v); err != nil || v.N != 4 {
		t.Fatalf("good body: %v %v", v, err)
	}
}

func TestReadPage(t *testing.T) {
	for q, want := range map[string]string{
		"":                   "{20 0} <nil>",
		"limit=5&cursor=9":   "{5 9} <nil>",
		"limit=5000":         "{100 0} <nil>",
		"limit=0":            "bad_request",
		"limit=x":            "bad_request",
		"cursor=-1":          "bad_request",
		"cursor=99999999999": "{20 99999999999} <nil>",
	} {
		p, err := api.ReadPage(httptest.NewRequest("GET", "/?"+q, nil), 20, 100)
		got := fmt.Sprint(p, " ", err)
		if err != nil {
			got = api.From(err).Code
		}
		if got != want {
			t.Errorf("ReadPage(%q) = %s, want %s", q, got, want)
		}
	}
}

func TestWriteErrorEnvelope(t *testing.T) {
	w := httptest.NewRecorder()
	api.WriteError(w, &staleError{3})
	b, _ := io.ReadAll(w.Body)
	var env struct {
		Error struct {
			Code    string           `json:"code"`
			Message string           `json:"message"`
			Details map[string]int64 `json:"details"`
		} `json:"error"`
	}
	if err := json.Unmarshal(b, &env); err != nil {
		t.Fatal(err)
	}
	if w.Code != 409 || env.Error.Code != "conflict" || env.Error.Details["current_version"] != 3 {
		t.Fatalf("%d %s", w.Code, b)
	}
}
