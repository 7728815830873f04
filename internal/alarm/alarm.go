// Package alarm delivers the server's alarms — a failed job run, a
// distributed transaction parked as failed — by webhook (an HTTP POST of
// JSON) and e-mail (SMTP), from one bounded queue drained by one
// goroutine, each delivery retried a few times. A flood of alarms drops
// the excess (logged) rather than grow memory or block the caller.
//
// Webhook destinations given by users (a job's alarm_webhook) pass the
// Policy: public addresses only unless an admin allowed an internal one,
// checked on the address actually dialled, so an app editor cannot make
// the server call its own or its neighbours' internal services.
package alarm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/smtp"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tangram-dev/tangram/internal/backoff"
)

// SMTP is the mail server alarm e-mails go through.
type SMTP struct {
	Addr     string // host:port
	From     string
	Username string // optional: PLAIN auth (over TLS, or to localhost)
	Password string
}

// Message is one alarm.
type Message struct {
	// Webhook receives JSON (the JSON field) by POST; "" sends none.
	Webhook string
	// Trusted skips the Policy: the URL came from the server's own
	// configuration (an admin), not from a user.
	Trusted bool
	// Emails receive Subject and Text; none sends none.
	Emails  []string
	Subject string
	Text    string
	JSON    any
	// Log identifies the alarm in log lines (key/value pairs).
	Log []any
}

// Config configures a Sender.
type Config struct {
	SMTP      *SMTP   // nil: e-mails fail (logged)
	Policy    *Policy // nil: public addresses only
	UserAgent string  // default "tangram-alarm"
	Queue     int     // default 1024
	// Attempts per delivery (default 4: about 1 s, 2 s, 4 s apart).
	Attempts int
	Logger   *slog.Logger
}

// Sender delivers alarms in the background until Close.
type Sender struct {
	cfg     Config
	log     *slog.Logger
	q       chan Message
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	client  *http.Client // through the policy
	trusted *http.Client
}

// New starts a sender.
func New(cfg Config) (*Sender, error) {
	if cfg.SMTP != nil && cfg.SMTP.Addr == "" {
		return nil, errors.New("alarm: SMTP needs an Addr")
	}
	if cfg.Policy == nil {
		cfg.Policy = &Policy{hosts: map[string]bool{}}
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "tangram-alarm"
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 1024
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = 4
	}
	s := &Sender{cfg: cfg, log: cfg.Logger, q: make(chan Message, cfg.Queue), stop: make(chan struct{}),
		client: cfg.Policy.Client(), trusted: (&Policy{hosts: map[string]bool{}, all: true}).Client()}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.wg.Add(1)
	go s.loop()
	return s, nil
}

// Close stops delivering; queued alarms are dropped.
func (s *Sender) Close() error {
	s.once.Do(func() { close(s.stop) })
	s.wg.Wait()
	s.client.CloseIdleConnections()
	s.trusted.CloseIdleConnections()
	return nil
}

// Send queues m; it reports false (and logs) when the queue is full.
func (s *Sender) Send(m Message) bool {
	select {
	case s.q <- m:
		return true
	default:
		s.log.Error("alarm: queue full; alarm dropped", m.Log...)
		return false
	}
}

func (s *Sender) loop() {
	defer s.wg.Done()
	for {
		var m Message
		select {
		case <-s.stop:
			return
		case m = <-s.q:
		}
		if len(m.Emails) > 0 {
			s.retry(m, "e-mail", func() error { return s.mail(m) })
		}
		if m.Webhook == "" {
			continue
		}
		body, err := json.Marshal(m.JSON)
		if err != nil {
			s.log.Error("alarm: webhook body", append(m.Log, "err", err)...)
			continue
		}
		client := s.client
		if m.Trusted {
			client = s.trusted
		}
		s.retry(m, "webhook", func() error { return s.post(client, m.Webhook, body) })
	}
}

func (s *Sender) post(client *http.Client, hook string, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook URL: %w", redactErr(err))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", s.cfg.UserAgent)
	resp, err := client.Do(req)
	if err != nil {
		return redactErr(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// mail sends m's e-mail to its recipients.
func (s *Sender) mail(m Message) error {
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
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		c.From, strings.Join(m.Emails, ", "), strings.NewReplacer("\r", " ", "\n", " ").Replace(m.Subject), time.Now().UTC().Format(time.RFC1123Z))
	b.WriteString(strings.ReplaceAll(strings.ReplaceAll(m.Text, "\r\n", "\n"), "\n", "\r\n"))
	return smtp.SendMail(c.Addr, auth, c.From, m.Emails, []byte(b.String()))
}

// retry tries send up to Attempts times, backing off 1 s, 2 s, 4 s….
func (s *Sender) retry(m Message, what string, send func() error) {
	bo := backoff.New(time.Second, 8*time.Second)
	for attempt := 1; ; attempt++ {
		err := send()
		if err == nil {
			return
		}
		if attempt >= s.cfg.Attempts {
			args := append(append([]any{}, m.Log...), "err", err)
			if what == "webhook" {
				args = append(args, "url", RedactURL(m.Webhook))
			}
			s.log.Error("alarm: "+what+" failed; giving up", args...)
			return
		}
		if !bo.Sleep(s.stop) {
			return
		}
	}
}

// RedactURL hides what a URL may carry as a secret — its query string
// (webhook keys such as ?key=…) and user info — for logs and for readers
// who may not edit it.
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

// Policy decides where webhooks may go: public addresses, plus the
// internal ones an admin allowed (CIDR prefixes, addresses or host names).
// Loopback, private, link-local, unspecified, multicast and carrier-grade
// NAT destinations are internal.
type Policy struct {
	prefixes []netip.Prefix
	hosts    map[string]bool
	all      bool
}

// NewPolicy parses an allow-list.
func NewPolicy(allow []string) (*Policy, error) {
	p := &Policy{hosts: map[string]bool{}}
	for _, a := range allow {
		a = strings.TrimSpace(a)
		switch {
		case a == "":
		case strings.Contains(a, "/"):
			pf, err := netip.ParsePrefix(a)
			if err != nil {
				return nil, fmt.Errorf("alarm: webhook allow-list entry %q: %w", a, err)
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

func (p *Policy) allowedIP(ip netip.Addr) bool {
	ip = ip.Unmap()
	if p.all || !internalAddr(ip) {
		return true
	}
	for _, pf := range p.prefixes {
		if pf.Contains(ip) {
			return true
		}
	}
	return false
}

// Check refuses a URL whose host is a literal internal address the policy
// does not allow (the dial-time check covers names).
func (p *Policy) Check(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: want an http or https URL", RedactURL(raw))
	}
	if p.hosts[strings.ToLower(u.Hostname())] {
		return nil
	}
	if ip, err := netip.ParseAddr(u.Hostname()); err == nil && !p.allowedIP(ip) {
		return fmt.Errorf("%s is an internal address; an admin may allow it (tangram server --job-webhook-allow)", ip)
	}
	return nil
}

// Client returns an HTTP client whose dialer refuses internal addresses
// the policy does not allow, unless the URL's host name itself is allowed;
// it follows no redirects and uses no proxy (either would hide the
// destination from the check).
func (p *Policy) Client() *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if p.all || p.hosts[strings.ToLower(host)] {
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
