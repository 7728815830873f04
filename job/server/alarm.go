package server

import (
	"fmt"
	"strings"
	"time"

	"github.com/tangram-dev/tangram/internal/alarm"
	"github.com/tangram-dev/tangram/job"
)

// SMTPConfig is the mail server alarm e-mails go through.
type SMTPConfig = alarm.SMTP

// alarm queues a job's alarm: a webhook call with the alarm as JSON and
// e-mails, delivered by the server's alarm machinery (internal/alarm:
// bounded queue, retries, the webhook destination policy).
func (s *Scheduler) alarm(a job.Alarm, hook string, emails []string) {
	if s.alarms == nil {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Job:      %s (id %d, app %s)\nRun:      %d, attempt %d\nStatus:   %s\nFired at: %s\nExecutor: %s\nServer:   %s\n",
		a.Job, a.JobID, a.App, a.RunID, a.Attempt, a.Status, a.FireAt.UTC().Format(time.RFC3339), a.Executor, a.Server)
	if a.Error != "" {
		fmt.Fprintf(&b, "Error:    %s\n", strings.ReplaceAll(a.Error, "\n", "\n          "))
	}
	s.alarms.Send(alarm.Message{Webhook: hook, Emails: emails, JSON: a,
		Subject: fmt.Sprintf("[tangram] job %s: run %d %s", a.Job, a.RunID, a.Status), Text: b.String(),
		Log: []any{"job", a.Job, "run", a.RunID}})
}

// RedactURL hides what a URL may carry as a secret — its query string
// (webhook keys such as ?key=…) and user info — for logs and for readers
// who may not edit the job.
func RedactURL(raw string) string { return alarm.RedactURL(raw) }

// checkWebhook refuses a job's alarm webhook the destination policy
// forbids (a literal internal address not on the allow-list).
func (s *Scheduler) checkWebhook(raw string) error {
	if err := s.hooks.Check(raw); err != nil {
		return fmt.Errorf("%w alarm_webhook: %v", job.ErrInvalid, err)
	}
	return nil
}
