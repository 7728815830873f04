package job

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// Alarm is what a job's alarm webhook receives (a JSON POST) when a run
// fails for good — its retries spent — or times out, or is killed.
type Alarm struct {
	Job      string    `json:"job"`
	JobID    int64     `json:"job_id"`
	App      string    `json:"app"`
	RunID    int64     `json:"run_id"`
	Status   string    `json:"status"`
	Error    string    `json:"error,omitempty"`
	Attempt  int       `json:"attempt"`
	FireAt   time.Time `json:"fire_at"`
	Executor string    `json:"executor,omitempty"`
	Server   string    `json:"server"`
}

func validWebhook(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(s) > 2048 {
		return fmt.Errorf("%w alarm_webhook %q: want an http(s) URL of at most 2 KiB", ErrInvalid, s)
	}
	return nil
}

// alarm queues a webhook call; the queue is bounded (a flood of failures
// drops alarms, logged, rather than growing memory).
func (s *Scheduler) alarm(a Alarm, hook string) {
	select {
	case s.alarms <- alarmItem{a, hook}:
	default:
		s.log.Error("job: alarm queue full; alarm dropped", "job", a.Job, "run", a.RunID)
	}
}

type alarmItem struct {
	a    Alarm
	hook string
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
		body, _ := json.Marshal(it.a)
		backoff := time.Second
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
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
			cancel()
			if err == nil {
				break
			}
			if attempt == 4 {
				s.log.Error("job: alarm webhook failed; giving up", "job", it.a.Job, "run", it.a.RunID, "err", err)
				break
			}
			select {
			case <-s.stop:
				return
			case <-time.After(backoff):
			}
			backoff *= 2
		}
	}
}
