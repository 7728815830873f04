package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	jobserver "github.com/tangram-dev/tangram/job/server"

	"github.com/tangram-dev/tangram/internal/alarm/alarmtest"
	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
)

// A run that fails for good e-mails its job's alarm addresses.
func TestAlarmEmail(t *testing.T) {
	sink := alarmtest.NewMailSink(t)
	h := servertest.Start(t, func(c *server.Config) {
		c.SMTP = jobserver.SMTPConfig{Addr: sink.Addr(), From: "tangram@example.com"}
	})
	c := h.Client()
	executor(t, h, "ops", map[string]job.Handler{
		"fail": func(ctx context.Context, jc *job.Context) error { return errors.New("disk full") },
	})
	j := create(t, c, map[string]any{"name": "mailing", "app": "ops", "handler": "fail",
		"alarm_email": []string{"oncall@example.com", "Ops <ops@example.com>"}, "trigger": map[string]any{"kind": "manual"}, "enabled": true})
	if err := c.Do(context.Background(), "POST", fmt.Sprintf("/api/v1/jobs/%d/trigger", j.ID), nil, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sink.Mail:
		for _, want := range []string{"oncall@example.com", "ops@example.com", "Subject: [tangram] job mailing: run", "failed", "Error:    disk full"} {
			if !strings.Contains(m, want) {
				t.Errorf("mail lacks %q:\n%s", want, m)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no alarm e-mail")
	}
	err := c.Do(context.Background(), "POST", "/api/v1/jobs", map[string]any{"name": "bad-mail", "app": "ops", "handler": "fail",
		"alarm_email": []string{"not an address"}, "trigger": map[string]any{"kind": "manual"}}, nil)
	if !apiclient.IsStatus(err, 400) || !strings.Contains(err.Error(), "alarm_email") {
		t.Fatalf("bad address: %v", err)
	}
}
