package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/smtp"
	"net/url"
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

// RedactURL hides what a URL may carry as a secret — its query string
// (webhook keys such as ?key=…) and user info — for logs and for readers
// who may not edit the job.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	if u.User != nil {
		u.User = url.User("***")
	}
	if u.RawQuery != "" {
		u.RawQuery = "***"
	}
	u.Fragment = ""
	return u.String()
}

// redactErr rewrites the URL inside an HTTP client error.
func redactErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = RedactURL(ue.URL)
	}
	return err
}

// webhookPolicy decides where alarm webhooks may go. By default public
// addresses only: loopback, private, link-local, unspecified and multicast
// destinations are refused unless an admin allowed them (Config.
// WebhookAllow: CIDR prefixes, addresses or host names), so an app editor
// cannot make the server call its own or its neighbours' internal
// services. The check runs on the address actually dialled, after DNS.
type webhookPolicy struct {
	prefixes []netip.Prefix
	hosts    map[string]bool
}

func newWebhookPolicy(allow []string) (*webhookPolicy, error) {
	p := &webhookPolicy{hosts: map[string]bool{}}
	for _, a := range allow {
		a = strings.TrimSpace(a)
		switch {
		case a == "":
		case strings.Contains(a, "/"):
			pf, err := netip.ParsePrefix(a)
			if err != nil {
				return nil, fmt.Errorf("job: webhook allow-list entry %q: %w", a, err)
			}
			p.prefixes = append(p.prefixes, pf.Masked())
		default:
			if ip, err := netip.ParseAddr(a); err == nil {
				p.prefixes = append(p.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			} else {
				p.hosts[strings.ToLower(a)] = true
			}
		}
	}
	return p, nil
}

func internalAddr(ip netip.Addr) bool {
	return ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() ||
		netip.MustParsePrefix("100.64.0.0/10").Contains(ip) // carrier-grade NAT
}

func (p *webhookPolicy) allowedIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !internalAddr(ip) {
		return true
	}
	for _, pf := range p.prefixes {
		if pf.Contains(ip) {
			return true
		}
	}
	return false
}

// check refuses a hook URL whose host is a literal internal address (the
// dial-time check covers names).
func (p *webhookPolicy) check(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if p.hosts[strings.ToLower(u.Hostname())] {
		return nil
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && !p.allowedIP(ip) {
		return fmt.Errorf("%w alarm_webhook: %s is an internal address; an admin may allow it (tangram server --job-webhook-allow)", job.ErrInvalid, ip)
	}
	return nil
}

// client returns the HTTP client that posts alarms: its dialer refuses
// internal addresses the policy does not allow, unless the URL's host
// name itself is allowed.
func (p *webhookPolicy) client() *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil, // a proxy would hide the destination from the check
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if p.hosts[strings.ToLower(host)] {
				return dialer.DialContext(ctx, network, addr)
			}
			ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			if err != nil {
				return nil, err
			}
			var lastErr error = fmt.Errorf("no address for %s", host)
			for _, ip := range ips {
				if !p.allowedIP(ip) {
					lastErr = fmt.Errorf("webhook destination %s is an internal address (not on the server's --job-webhook-allow list)", ip)
					continue
				}
				c, err := dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
				if err == nil {
					return c, nil
				}
				lastErr = err
			}
			return nil, lastErr
		},
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 5 * time.Second,
		MaxIdleConns:          16,
		IdleConnTimeout:       30 * time.Second,
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// alarmLoop posts alarms, retrying each up to 4 times (1 s, 2 s, 4 s apart)
// until the webhook answers 2xx.
func (s *Scheduler) alarmLoop() {
	client := s.hooks.client()
	defer client.CloseIdleConnections()
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
			if err != nil {
				return redactErr(err)
			}
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
			args := []any{"job", it.a.Job, "run", it.a.RunID, "err", err}
			if what == "webhook" {
				args = append(args, "url", RedactURL(it.hook))
			}
			s.log.Error("job: alarm "+what+" failed; giving up", args...)
			return
		}
		if !bo.Sleep(s.stop) {
			return
		}
	}
}
