package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/alarm"
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/durable"
	"github.com/tangram-dev/tangram/internal/errcode"
	"github.com/tangram-dev/tangram/trace"
	"github.com/tangram-dev/tangram/trace/alert"
)

// Alerts configures the alert rules' evaluation.
type Alerts struct {
	// EvalEvery is how often every rule is evaluated (default 15 s).
	EvalEvery time.Duration
	// Repeat re-notifies an alert still firing and not acknowledged this
	// often (default 1 h).
	Repeat time.Duration
	// WebhookAllow lets rules' webhooks reach internal addresses (CIDR
	// prefixes, addresses or host names); default: public ones only.
	WebhookAllow []string
	// SMTP sends the rules' e-mails (nil: e-mails fail, logged).
	SMTP *alarm.SMTP
}

// ErrNoAlert is returned for an unknown rule.
var ErrNoAlert = errcode.New(errcode.NotFound, "trace: no such alert rule")

// alerter evaluates the rules, keeps their state and notifies.
type alerter struct {
	s    *Server
	path string // rules, silences and acknowledgements, as JSON

	mu    sync.Mutex
	rules map[string]trace.AlertRule
	state map[string]*alertState
}

type alertState struct {
	firing   bool
	reading  alert.Reading
	since    time.Time
	notified time.Time
	silenced time.Time // until
	ackedBy  string
}

// alertsFile is what is kept on disk.
type alertsFile struct {
	Rules    []trace.AlertRule    `json:"rules"`
	Silenced map[string]time.Time `json:"silenced,omitempty"`
}

func newAlerter(s *Server) (*alerter, error) {
	a := &alerter{s: s, path: filepath.Join(s.cfg.Dir, "alerts.json"), rules: map[string]trace.AlertRule{}, state: map[string]*alertState{}}
	b, err := os.ReadFile(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trace: read alert rules: %w", err)
	}
	var f alertsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("trace: alert rules in %s: %w", a.path, err)
	}
	for _, r := range f.Rules {
		a.rules[r.Name] = r
		a.state[r.Name] = &alertState{silenced: f.Silenced[r.Name]}
	}
	return a, nil
}

// saveLocked writes the rules and silences (a.mu held).
func (a *alerter) saveLocked() error {
	f := alertsFile{Silenced: map[string]time.Time{}}
	for _, r := range a.rules {
		f.Rules = append(f.Rules, r)
		if st := a.state[r.Name]; st != nil && !st.silenced.IsZero() {
			f.Silenced[r.Name] = st.silenced
		}
	}
	sort.Slice(f.Rules, func(i, j int) bool { return f.Rules[i].Name < f.Rules[j].Name })
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.WriteFile(a.path, b, 0o600); err != nil {
		return fmt.Errorf("trace: save alert rules: %w", err)
	}
	return nil
}

// run evaluates every rule each EvalEvery until stop.
func (a *alerter) run(stop <-chan struct{}) {
	every := a.s.cfg.Alerts.EvalEvery
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			a.evaluate(time.Now())
		}
	}
}

// evaluate reads every rule and notifies what changed.
func (a *alerter) evaluate(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, r := range a.rules {
		st := a.state[name]
		if st == nil {
			st = &alertState{}
			a.state[name] = st
		}
		rd := alert.Evaluate(a.s.roll, r)
		st.reading = rd
		silenced := now.Before(st.silenced)
		switch {
		case rd.Firing && !st.firing:
			st.firing, st.since, st.ackedBy = true, now, ""
			if !silenced {
				a.notify(r, "firing", rd, now)
				st.notified = now
			}
		case rd.Firing && st.firing && st.ackedBy == "" && !silenced && now.Sub(st.notified) >= a.s.cfg.Alerts.Repeat:
			a.notify(r, "firing", rd, now) // a reminder
			st.notified = now
		case !rd.Firing && st.firing:
			st.firing, st.since, st.ackedBy = false, time.Time{}, ""
			if !silenced {
				a.notify(r, "resolved", rd, now)
			}
		}
	}
}

// notification is the JSON a webhook receives.
type notification struct {
	Alert   string          `json:"alert"`
	Status  string          `json:"status"` // firing or resolved
	Rule    trace.AlertRule `json:"rule"`
	Value   float64         `json:"value"`
	Short   float64         `json:"short,omitempty"`
	Calls   uint64          `json:"calls"`
	At      time.Time       `json:"at"`
	Summary string          `json:"summary"`
}

func summary(r trace.AlertRule, status string, rd alert.Reading) string {
	what := r.Service
	if r.Operation != "" {
		what += " " + r.Operation
	}
	cmp := "≥"
	if r.Below {
		cmp = "<"
	}
	if status == "resolved" {
		return fmt.Sprintf("resolved: %s: %s is %.4g (%d calls in %d min)", r.Name, r.Metric, rd.Value, rd.Calls, alert.WithDefaults(r).Window)
	}
	return fmt.Sprintf("%s: %s %s is %.4g, %s %.4g (%d calls in %d min)", r.Name, what, r.Metric, rd.Value, cmp, r.Threshold, rd.Calls, alert.WithDefaults(r).Window)
}

func (a *alerter) notify(r trace.AlertRule, status string, rd alert.Reading, now time.Time) {
	a.s.log.Warn("trace: alert "+status, "alert", r.Name, "service", r.Service, "metric", r.Metric, "value", rd.Value, "threshold", r.Threshold)
	snd := a.s.alarms
	if snd == nil || (r.Webhook == "" && len(r.Emails) == 0) {
		return
	}
	text := summary(r, status, rd)
	snd.Send(alarm.Message{Webhook: r.Webhook, Emails: r.Emails, Subject: "[tangram] " + text, Text: text,
		JSON: notification{Alert: r.Name, Status: status, Rule: r, Value: rd.Value, Short: rd.Short, Calls: rd.Calls, At: now, Summary: text},
		Log:  []any{"alert", r.Name, "status", status}})
}

// list returns every rule with its state, by name.
func (a *alerter) list(now time.Time) []trace.Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]trace.Alert, 0, len(a.rules))
	for name, r := range a.rules {
		al := trace.Alert{Rule: r, Status: "ok"}
		if st := a.state[name]; st != nil {
			al.Value, al.Short, al.Calls, al.AckedBy = st.reading.Value, st.reading.Short, st.reading.Calls, st.ackedBy
			if st.firing {
				al.Status, al.Since = "firing", st.since.UTC().Format(time.RFC3339)
			}
			if now.Before(st.silenced) {
				al.Status, al.SilencedUntil = "silenced", st.silenced.UTC().Format(time.RFC3339)
			}
		}
		out = append(out, al)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Rule.Name < out[j].Rule.Name })
	return out
}

// Firing counts the rules firing now.
func (s *Server) Firing() int {
	n := 0
	for _, al := range s.alerts.list(time.Now()) {
		if al.Status == "firing" {
			n++
		}
	}
	return n
}

// Alerts returns every rule with its state (the console's list).
func (s *Server) Alerts() []trace.Alert { return s.alerts.list(time.Now()) }

func (s *Server) audit(ctx context.Context, action, name string, before, after any) {
	if s.cfg.Audit == nil {
		return
	}
	e := audit.Entry{Actor: auth.Actor(ctx), Action: action, Resource: "trace-alert/" + name}
	if before != nil {
		e.Before = audit.Value(before)
	}
	if after != nil {
		e.After = audit.Value(after)
	}
	s.cfg.Audit(ctx, e)
}

// mountAlerts adds the alert routes.
func (s *Server) mountAlerts(h func(pattern string, fn api.HandlerFunc)) {
	a := s.alerts
	h("GET "+apiBase+"/alerts", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermRead, "", "", ""); err != nil {
			return err
		}
		api.WriteJSON(w, http.StatusOK, trace.AlertsReply{Alerts: a.list(time.Now())})
		return nil
	})
	h("PUT "+apiBase+"/alerts/{name}", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermEdit, "", "", ""); err != nil {
			return err
		}
		var rule trace.AlertRule
		if err := api.Decode(r, &rule); err != nil {
			return err
		}
		if rule.Name == "" {
			rule.Name = r.PathValue("name")
		}
		if rule.Name != r.PathValue("name") {
			return api.BadRequest("the rule's name %q is not the path's %q", rule.Name, r.PathValue("name"))
		}
		if err := alert.Validate(&rule, s.roll.Window()); err != nil {
			return api.BadRequest("%v", err)
		}
		if rule.Webhook != "" {
			if err := s.hooks.Check(rule.Webhook); err != nil {
				return api.BadRequest("%v", err)
			}
		}
		a.mu.Lock()
		before, existed := a.rules[rule.Name]
		a.rules[rule.Name] = rule
		if _, ok := a.state[rule.Name]; !ok {
			a.state[rule.Name] = &alertState{}
		}
		err := a.saveLocked()
		if err != nil {
			if existed {
				a.rules[rule.Name] = before
			} else {
				delete(a.rules, rule.Name)
			}
		}
		a.mu.Unlock()
		if err != nil {
			return err
		}
		var prev any
		if existed {
			prev = before
		}
		s.audit(r.Context(), "trace.alert.set", rule.Name, prev, rule)
		api.WriteJSON(w, http.StatusOK, rule)
		return nil
	})
	h("DELETE "+apiBase+"/alerts/{name}", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermEdit, "", "", ""); err != nil {
			return err
		}
		name := r.PathValue("name")
		a.mu.Lock()
		before, ok := a.rules[name]
		if ok {
			delete(a.rules, name)
			delete(a.state, name)
		}
		var err error
		if ok {
			if err = a.saveLocked(); err != nil {
				a.rules[name] = before
			}
		}
		a.mu.Unlock()
		if !ok {
			return ErrNoAlert
		}
		if err != nil {
			return err
		}
		s.audit(r.Context(), "trace.alert.delete", name, before, nil)
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	h("POST "+apiBase+"/alerts/{name}/silence", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermEdit, "", "", ""); err != nil {
			return err
		}
		var req trace.SilenceRequest
		if err := api.Decode(r, &req); err != nil {
			return err
		}
		d, err := time.ParseDuration(req.For)
		if err != nil || d < 0 || d > 30*24*time.Hour {
			return api.BadRequest("for %q: want a duration up to 720h (0 lifts the silence)", req.For)
		}
		name := r.PathValue("name")
		a.mu.Lock()
		st, ok := a.state[name]
		if ok {
			st.silenced = time.Time{}
			if d > 0 {
				st.silenced = time.Now().Add(d)
			}
			err = a.saveLocked()
		}
		a.mu.Unlock()
		if !ok {
			return ErrNoAlert
		}
		if err != nil {
			return err
		}
		s.audit(r.Context(), "trace.alert.silence", name, nil, req)
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
	h("POST "+apiBase+"/alerts/{name}/ack", func(w http.ResponseWriter, r *http.Request) error {
		if err := auth.Check(r.Context(), auth.PermEdit, "", "", ""); err != nil {
			return err
		}
		name := r.PathValue("name")
		a.mu.Lock()
		st, ok := a.state[name]
		firing := ok && st.firing
		if firing {
			st.ackedBy = auth.Actor(r.Context())
		}
		a.mu.Unlock()
		if !ok {
			return ErrNoAlert
		}
		if !firing {
			return api.Conflict("alert %s is not firing: nothing to acknowledge", name)
		}
		s.audit(r.Context(), "trace.alert.ack", name, nil, nil)
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}
