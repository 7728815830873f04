package server_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	jobserver "github.com/tangram-dev/tangram/job/server"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
)

// mailSink is a minimal SMTP server for the test: it accepts one message
// per connection and hands over its recipients and text.
type mailSink struct {
	ln   net.Listener
	mail chan string
}

func newMailSink(t *testing.T) *mailSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := &mailSink{ln: ln, mail: make(chan string, 4)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go m.serve(c)
		}
	}()
	return m
}

func (m *mailSink) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tp := textproto.NewConn(c)
	_ = tp.PrintfLine("220 sink ESMTP")
	var rcpt []string
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch {
		case cmd == "EHLO" || cmd == "HELO":
			_ = tp.PrintfLine("250 sink")
		case strings.HasPrefix(strings.ToUpper(line), "RCPT TO:"):
			rcpt = append(rcpt, strings.Trim(line[8:], "<> "))
			_ = tp.PrintfLine("250 ok")
		case cmd == "DATA":
			_ = tp.PrintfLine("354 go on")
			body, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			m.mail <- "To " + strings.Join(rcpt, ",") + "\n" + string(body)
			_ = tp.PrintfLine("250 queued")
		case cmd == "QUIT":
			_ = tp.PrintfLine("221 bye")
			return
		default:
			_ = tp.PrintfLine("250 ok")
		}
	}
}

// A run that fails for good e-mails its job's alarm addresses.
func TestAlarmEmail(t *testing.T) {
	sink := newMailSink(t)
	h := servertest.Start(t, func(c *server.Config) {
		c.SMTP = jobserver.SMTPConfig{Addr: sink.ln.Addr().String(), From: "tangram@example.com"}
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
	case m := <-sink.mail:
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
