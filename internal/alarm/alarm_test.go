package alarm_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/alarm"
	"github.com/tangram-dev/tangram/internal/alarm/alarmtest"
)

type payload struct {
	Name string `json:"name"`
}

// A trusted webhook on loopback gets the JSON, after a failed first
// attempt; the e-mail carries subject (one line) and text.
func TestDelivery(t *testing.T) {
	var calls atomic.Int64
	got := make(chan payload, 1)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		var p payload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil || r.Header.Get("User-Agent") != "tangram-test" {
			t.Errorf("webhook: %v %q", err, r.Header.Get("User-Agent"))
		}
		got <- p
	}))
	defer hook.Close()
	sink := alarmtest.NewMailSink(t)
	s, err := alarm.New(alarm.Config{SMTP: &alarm.SMTP{Addr: sink.Addr(), From: "tangram@example.com"}, UserAgent: "tangram-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.Send(alarm.Message{Webhook: hook.URL + "/a?key=secret", Trusted: true, JSON: payload{"disk"},
		Emails: []string{"ops@example.com"}, Subject: "[tangram] disk\nfull", Text: "line one\nline two\n"}) {
		t.Fatal("queue full")
	}
	select {
	case m := <-sink.Mail:
		for _, want := range []string{"To ops@example.com", "Subject: [tangram] disk full\n", "\n\nline one\nline two\n"} {
			if !strings.Contains(m, want) {
				t.Errorf("mail lacks %q:\n%q", want, m)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no e-mail")
	}
	select {
	case p := <-got:
		if p.Name != "disk" || calls.Load() != 2 {
			t.Fatalf("webhook got %+v after %d calls", p, calls.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook call")
	}
}

// The policy refuses internal destinations it was not told to allow,
// both as literals (Check) and when dialling.
func TestPolicy(t *testing.T) {
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer hook.Close()
	p, err := alarm.NewPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{hook.URL, "http://10.1.2.3/x", "http://[::1]/", "http://100.64.0.1/"} {
		if err := p.Check(u); err == nil || !strings.Contains(err.Error(), "internal address") {
			t.Errorf("%s: %v", u, err)
		}
	}
	if err := p.Check("ftp://example.com/"); err == nil {
		t.Error("ftp accepted")
	}
	if err := p.Check("https://example.com/hook?key=1"); err != nil {
		t.Error(err)
	}
	name := strings.Replace(hook.URL, "127.0.0.1", "localhost", 1)
	if _, err := p.Client().Post(name, "application/json", nil); err == nil || !strings.Contains(err.Error(), "internal address") {
		t.Errorf("dialling %s: %v", name, err)
	}
	allowed, err := alarm.NewPolicy([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := allowed.Client().Post(hook.URL, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := alarm.NewPolicy([]string{"10.0.0.0/99"}); err == nil {
		t.Error("a bad prefix accepted")
	}
	if got := alarm.RedactURL("https://u:p@example.com/h?key=s#f"); strings.Contains(got, "u:p") || strings.Contains(got, "key=s") || !strings.HasSuffix(got, "@example.com/h?***") {
		t.Errorf("redacted: %s", got)
	}
}
