package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/smtp"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/backoff"
	"github.com/tangram-dev/tangram/job"
)

// SMTPConfig is the mail server alarm e-mails go through.
type SMTPConfig struct {
	Addr     string // host:port
	From     string
	Username string // optional: PLAIN auth (over TLS, or to localhost)
	Password string
}

// alarm queues a webhook call and e-mails; the queue is bounded (a flood
// of failures drops alarms, logged, rather than growing memory).
func (s *Scheduler) alarm(a job.Alarm, hook string, emails []string) {
	select {
	case s.alarms <- alarmItem{a, hook, emails}:
	default:
		s.log.Error("job: alarm queue full; alarm dropped", "job", a.Job, "run", a.RunID)
	}
}

type alarmItem struct {
	a      job.Alarm
	hook   string
	emails []string
}

// mailAlarm sends an alarm e-mail to its recipients.
func (s *Scheduler) mailAlarm(a job.Alarm, to []string) error {
	c := s.cfg.SMTP
	if c == nil || c.Addr == "" {
		return errors.New("no SMTP server configured (tangram server --smtp-addr)")
	}
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("smtp address %q: %w", c.Addr, err)
	}
	var auth smtp.Auth
	if c.Username != "" {
		auth = smtp.PlainAuth("", c.Username, c.Password, host)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: [tangram] job %s: run %d %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		c.From, strings.Join(to, ", "), a.Job, a.RunID, a.Status, time.Now().UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Job:      %s (id %d, app %s)\r\nRun:      %d, attempt %d\r\nStatus:   %s\r\nFired at: %s\r\nExecutor: %s\r\nServer:   %s\r\n",
		a.Job, a.JobID, a.App, a.RunID, a.Attempt, a.Status, a.FireAt.UTC().Format(time.RFC3339), a.Executor, a.Server)
	if a.Error != "" {
		fmt.Fprintf(&b, "Error:    %s\r\n", strings.ReplaceAll(a.Error, "\n", "\r\n          "))
	}
	return smtp.SendMail(c.Addr, auth, c.From, to, []byte(b.String()))
}

// alarmLoop posts alarms, retrying each up to 4 times (1 s, 2 s, 4 s apart)
// until the webhook answers 2xx.
func (s *Scheduler) alarmLoop() {
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		var it alarmItem
		select {
		case <-s.stop:
			return
		case it = <-s.alarms:
		}
		if len(it.emails) > 0 {
			s.retryAlarm(it, "e-mail", func() error { return s.mailAlarm(it.a, it.emails) })
		}
		if it.hook == "" {
			continue
		}
		body, _ := json.Marshal(it.a)
		s.retryAlarm(it, "webhook", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, it.hook, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", "tangram-job-alarm")
			resp, err := client.Do(req)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					err = fmt.Errorf("status %s", resp.Status)
				}
			}
			return err
		})
	}
}

// retryAlarm tries send up to 4 times (about 1 s, 2 s, 4 s apart).
func (s *Scheduler) retryAlarm(it alarmItem, what string, send func() error) {
	bo := backoff.New(time.Second, 8*time.Second)
	for attempt := 1; ; attempt++ {
		err := send()
		if err == nil {
			return
		}
		if attempt == 4 {
			s.log.Error("job: alarm "+what+" failed; giving up", "job", it.a.Job, "run", it.a.RunID, "err", err)
			return
		}
		if !bo.Sleep(s.stop) {
			return
		}
	}
}
