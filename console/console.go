// Package console is Tangram's web console: server-rendered pages
// (html/template) with embedded assets, no Node build step. Pages sit in a
// common layout; components add pages with Page and navigation links with
// Nav. Forms post back with the session's CSRF token; every page requires a
// signed-in user.
package console

import (
	"bytes"
	"context"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	jobserver "github.com/tangram-dev/tangram/job/server"
	"github.com/tangram-dev/tangram/mq/wire"

	registryserver "github.com/tangram-dev/tangram/registry/server"

	configserver "github.com/tangram-dev/tangram/config/server"

	idserver "github.com/tangram-dev/tangram/idgen/server"
	"github.com/tangram-dev/tangram/internal/api"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/internal/audit"
	"github.com/tangram-dev/tangram/internal/auth"
	"github.com/tangram-dev/tangram/internal/store"
	kvserver "github.com/tangram-dev/tangram/kv/server"
	lockserver "github.com/tangram-dev/tangram/lock/server"
	"github.com/tangram-dev/tangram/mq"
	traceserver "github.com/tangram-dev/tangram/trace/server"
	txnserver "github.com/tangram-dev/tangram/txn/server"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config wires the console to the services it shows.
type Config struct {
	Auth     *auth.Service
	Config   *configserver.Server     // optional: the config pages
	Registry *registryserver.Registry // optional: the registry pages
	Jobs     *jobserver.Scheduler     // optional: the job pages
	// MQ, optional, returns the platform's MQ client (the message queue pages).
	MQ func(ctx context.Context) (*mq.Client, error)
	// KV, optional: the kv store's page.
	KV *kvserver.Server
	// Locks, optional: the lock component's page.
	Locks *lockserver.Server
	// IDs, optional: the id component's page (segment tags, leased
	// worker numbers).
	IDs *idserver.Server
	// Txns, optional: the transaction coordinator's pages.
	Txns *txnserver.Server
	// Traces, optional: the trace collector's pages (search, waterfall,
	// service dashboards, the service map).
	Traces        *traceserver.Server
	Store         *store.Store
	Logger        *slog.Logger
	SecureCookies bool
	Version       string
	// API lists the HTTP API's routes for the API page (the OpenAPI
	// document's contents).
	API []apidoc.Route
}

// nav is the top navigation: a link for each component the console was
// given, then users and audit.
func (cfg Config) nav() []NavLink {
	out := []NavLink{{"/overview", "Overview"}}
	if cfg.Config != nil {
		out = append(out, NavLink{"/config", "Config"})
	}
	if cfg.Registry != nil {
		out = append(out, NavLink{"/registry", "Registry"})
	}
	if cfg.Jobs != nil {
		out = append(out, NavLink{"/jobs", "Jobs"})
	}
	if cfg.MQ != nil {
		out = append(out, NavLink{"/mq", "MQ"})
	}
	if cfg.KV != nil {
		out = append(out, NavLink{"/kv", "kv"})
	}
	if cfg.Locks != nil {
		out = append(out, NavLink{"/locks", "Locks"})
	}
	if cfg.IDs != nil {
		out = append(out, NavLink{"/ids", "IDs"})
	}
	if cfg.Txns != nil {
		out = append(out, NavLink{"/txns", "Transactions"})
	}
	if cfg.Config != nil {
		out = append(out, NavLink{"/shard", "Sharding"})
	}
	if cfg.Traces != nil {
		out = append(out, NavLink{"/traces", "Traces"})
	}
	return append(out, NavLink{"/users", "Users"}, NavLink{"/audit", "Audit"})
}

// home is the first page of the navigation.
func (c *Console) home() string { return c.nav[0].Href }

// NavLink is an entry of the top navigation.
type NavLink struct{ Href, Label string }

// Console serves the web console.
type Console struct {
	cfg   Config
	log   *slog.Logger
	pages map[string]*template.Template
	nav   []NavLink
}

var funcs = template.FuncMap{
	// userTopics counts the topics users made: not the system ones
	// (%RETRY%…, %DLQ%…, %SCHEDULE%, %TIMER%, the half messages' topic).
	"userTopics": func(ts any) int {
		n := 0
		switch l := ts.(type) {
		case []string:
			for _, t := range l {
				if !strings.HasPrefix(t, "%") {
					n++
				}
			}
		case []wire.TopicConfig:
			for _, t := range l {
				if !strings.HasPrefix(t.Name, "%") {
					n++
				}
			}
		}
		return n
	},
	"ms": func(v int64) string {
		if v == 0 {
			return ""
		}
		return time.UnixMilli(v).UTC().Format("2006-01-02 15:04:05")
	},
	"join": func(s []string) string { return strings.Join(s, ",") },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05.000")
	},
	"dur": func(a, b time.Time) string {
		if a.IsZero() || b.IsZero() {
			return ""
		}
		return b.Sub(a).Round(time.Millisecond).String()
	},
	"pct": func(f float64) string { return strconv.FormatFloat(f*100, 'f', 1, 64) + "%" },
	"bar": func(n, max int) int {
		if max <= 0 {
			return 0
		}
		return n * 200 / max
	},
}

// New parses the templates.
func New(cfg Config) (*Console, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := &Console{cfg: cfg, log: cfg.Logger, pages: map[string]*template.Template{},
		nav: cfg.nav()}
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html")
	if err != nil {
		return nil, fmt.Errorf("console: parse layout: %w", err)
	}
	for _, p := range []string{"login", "apps", "app", "namespace", "diff", "audit", "users", "registry", "service", "jobs", "job", "jobrun", "mq", "mqtopic", "mqgroup", "api", "error", "overview", "jobform", "kv", "locks", "ids", "txns", "txn", "shard", "shardrules", "traces", "trace", "traceservice", "tracemap", "metrics", "metric"} {
		t, err := layout.Clone()
		if err != nil {
			return nil, err
		}
		if _, err := t.ParseFS(templateFS, "templates/"+p+".html"); err != nil {
			return nil, fmt.Errorf("console: parse %s: %w", p, err)
		}
		c.pages[p] = t
	}
	return c, nil
}

// Register mounts the console on mux.
func (c *Console) Register(mux *http.ServeMux) {
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /login", c.loginPage)
	mux.HandleFunc("POST /login", c.login)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, c.home(), http.StatusSeeOther) })
	mux.Handle("GET /overview", c.page(c.overviewPage))
	// Any other page: a 404 inside the layout (the API's own paths, under
	// /api/, answer JSON).
	notFound := c.page(func(w http.ResponseWriter, r *http.Request) error {
		return api.NotFound("no console page at %s", r.URL.Path)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.NotFound(w, r)
			return
		}
		notFound.ServeHTTP(w, r)
	})
	mux.Handle("POST /logout", c.page(c.logout))
	mux.Handle("GET /audit", c.page(c.auditPage))
	mux.Handle("GET /api-docs", c.page(func(w http.ResponseWriter, r *http.Request) error {
		c.render(w, r, "api", "HTTP API", map[string]any{"Routes": c.cfg.API})
		return nil
	}))
	c.registerUsers(mux)
	c.registerConfig(mux)
	c.registerRegistry(mux)
	c.registerJobs(mux)
	c.registerMQ(mux)
	c.registerKV(mux)
	c.registerLocks(mux)
	c.registerIDs(mux)
	c.registerTxns(mux)
	c.registerShard(mux)
	c.registerTraces(mux)
}

type view struct {
	Title   string
	User    string
	CSRF    string
	Nav     []NavLink
	Flash   string
	Error   string
	Version string
	Data    any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, page, title string, data any) {
	c.renderStatus(w, r, http.StatusOK, page, title, data)
}

// renderError shows an error inside the console's layout (a 404, a 403…),
// not as a bare text page.
func (c *Console) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	title := http.StatusText(status)
	c.renderStatus(w, r, status, "error", title, map[string]any{"Title": title, "Message": msg})
}

func (c *Console) renderStatus(w http.ResponseWriter, r *http.Request, status int, page, title string, data any) {
	v := view{Title: title, Nav: c.nav, Version: c.cfg.Version, Data: data,
		Flash: r.URL.Query().Get("msg"), Error: r.URL.Query().Get("err")}
	if p := auth.FromContext(r.Context()); p != nil {
		v.User, v.CSRF = p.Name, p.CSRF
	}
	var buf bytes.Buffer
	if err := c.pages[page].ExecuteTemplate(&buf, "layout", v); err != nil {
		c.log.Error("console: render", "page", page, "err", err)
		http.Error(w, "console: render failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// page wraps a console handler: it requires a session (redirecting to the
// login page otherwise) and checks CSRF on posts; handler errors come back
// to the referring page as a message.
func (c *Console) page(fn func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ck, err := r.Cookie(auth.SessionCookie)
		if err != nil || ck.Value == "" {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		p, err := c.cfg.Auth.Authenticate(r)
		if err != nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "session expired or bad CSRF token; reload the page", http.StatusForbidden)
			return
		}
		r = r.WithContext(audit.WithRemote(auth.WithPrincipal(r.Context(), p), auth.RemoteHost(r)))
		if err := fn(w, r); err != nil {
			if api.Internal(err) {
				c.log.Error("console: request failed", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			ae := api.From(err)
			if r.Method == http.MethodGet {
				c.renderError(w, r, ae.Status, ae.Message)
				return
			}
			c.back(w, r, "", ae.Message)
		}
	})
}

// back redirects to the page the form was on with a message.
func (c *Console) back(w http.ResponseWriter, r *http.Request, msg, errMsg string) {
	target := r.Header.Get("Referer")
	u, err := url.Parse(target)
	if target == "" || err != nil || (u.Host != "" && u.Host != r.Host) {
		u = &url.URL{Path: c.home()}
	}
	q := u.Query()
	q.Del("msg")
	q.Del("err")
	if msg != "" {
		q.Set("msg", msg)
	}
	if errMsg != "" {
		q.Set("err", errMsg)
	}
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
}

// loginCookie carries the sign-in form's CSRF token (double submit: the
// form holds the same value, which a cross-site page can neither read
// nor set), so another site cannot sign a visitor in as someone else.
const loginCookie = "tangram_login"

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	tok := ""
	if ck, err := r.Cookie(loginCookie); err == nil && len(ck.Value) >= 32 && len(ck.Value) <= 64 {
		tok = ck.Value
	} else {
		tok = auth.NewToken()
		http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/login", HttpOnly: true, Secure: c.cfg.SecureCookies,
			SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	}
	c.render(w, r, "login", "Sign in", map[string]string{"Next": safeNext(r.URL.Query().Get("next")), "LoginCSRF": tok})
}

// safeNext returns next when it is a path on this site, else "". Browsers
// read a backslash as a slash, so "/\evil.example" is "//evil.example":
// another site.
func safeNext(next string) string {
	if len(next) < 1 || len(next) > 2048 || next[0] != '/' || strings.ContainsAny(next, "\\\x00\r\n\t") {
		return ""
	}
	if len(next) > 1 && next[1] == '/' {
		return ""
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return ""
	}
	return next
}

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	ck, err := r.Cookie(loginCookie)
	if err != nil || ck.Value == "" || subtle.ConstantTimeCompare([]byte(ck.Value), []byte(r.PostForm.Get("csrf"))) != 1 {
		http.Redirect(w, r, "/login?err="+url.QueryEscape("the sign-in form expired or came from another site; sign in again"), http.StatusSeeOther)
		return
	}
	sid, _, err := c.cfg.Auth.Login(r.Context(), r.PostForm.Get("user"), r.PostForm.Get("secret"), auth.RemoteHost(r))
	if errors.Is(err, auth.ErrTooManyAttempts) {
		http.Redirect(w, r, "/login?err="+url.QueryEscape("too many failed sign-ins; wait a minute"), http.StatusSeeOther)
		return
	}
	if err != nil {
		http.Redirect(w, r, "/login?err="+url.QueryEscape("wrong user, password or token"), http.StatusSeeOther)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: auth.SessionCookie, Value: sid, Path: "/", HttpOnly: true, Secure: c.cfg.SecureCookies,
		SameSite: http.SameSiteLaxMode, MaxAge: int(auth.SessionTTL.Seconds())})
	next := safeNext(r.PostForm.Get("next"))
	if next == "" {
		next = c.home()
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) error {
	if ck, err := r.Cookie(auth.SessionCookie); err == nil {
		_ = c.cfg.Auth.Logout(r.Context(), ck.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: auth.SessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
	return nil
}

func (c *Console) auditPage(w http.ResponseWriter, r *http.Request) error {
	if err := auth.Check(r.Context(), auth.PermAdmin, "", "", ""); err != nil {
		return err
	}
	q := r.URL.Query()
	cursor, _ := strconv.ParseInt(q.Get("cursor"), 10, 64)
	f := audit.Filter{Actor: strings.TrimSpace(q.Get("actor")), ActionPrefix: strings.TrimSpace(q.Get("action")),
		ResourcePrefix: strings.TrimSpace(q.Get("resource")), Before: cursor, Limit: 100}
	// A time window (UTC, from the form's date-time fields).
	for k, dst := range map[string]*int64{"since": &f.Since, "until": &f.Until} {
		if v := strings.TrimSpace(q.Get(k)); v != "" {
			t, err := time.Parse("2006-01-02T15:04", v)
			if err != nil {
				t, err = time.Parse("2006-01-02T15:04:05", v)
			}
			if err != nil {
				return api.BadRequest("%s %q: want a date and time (UTC)", k, v)
			}
			*dst = t.UnixMilli()
		}
	}
	es, err := audit.List(r.Context(), c.cfg.Store, f)
	if err != nil {
		return err
	}
	next := ""
	if len(es) == 100 {
		// The next page keeps the filters.
		nq := url.Values{}
		for _, k := range []string{"actor", "action", "resource", "since", "until"} {
			if v := q.Get(k); v != "" {
				nq.Set(k, v)
			}
		}
		nq.Set("cursor", strconv.FormatInt(es[len(es)-1].ID, 10))
		next = "/audit?" + nq.Encode()
	}
	rows := make([]auditRow, len(es))
	for i, e := range es {
		rows[i] = auditRow{Entry: e, Diff: jsonDiff(e.Before, e.After)}
	}
	c.render(w, r, "audit", "Audit", map[string]any{"Entries": rows, "Next": next, "Filter": f, "Since": q.Get("since"), "Until": q.Get("until")})
	return nil
}

// auditRow is an audit entry with, when before and after are both JSON
// objects, what changed between them.
type auditRow struct {
	audit.Entry
	Diff []fieldChange
}

type fieldChange struct{ Key, Old, New string }

// jsonDiff lists the top-level fields that differ between two JSON objects
// (nil when either is not one: the raw values are shown then).
func jsonDiff(before, after string) []fieldChange {
	var b, a map[string]any
	if json.Unmarshal([]byte(before), &b) != nil || json.Unmarshal([]byte(after), &a) != nil || b == nil || a == nil {
		return nil
	}
	keys := map[string]bool{}
	for k := range b {
		keys[k] = true
	}
	for k := range a {
		keys[k] = true
	}
	var out []fieldChange
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		vb, inB := b[k]
		va, inA := a[k]
		ob, _ := json.Marshal(vb)
		oa, _ := json.Marshal(va)
		if inB == inA && string(ob) == string(oa) {
			continue
		}
		fc := fieldChange{Key: k}
		if inB {
			fc.Old = string(ob)
		}
		if inA {
			fc.New = string(oa)
		}
		out = append(out, fc)
	}
	return out
}
