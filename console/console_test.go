package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/config"
	"github.com/tangram-dev/tangram/internal/wait"
	"github.com/tangram-dev/tangram/job"
	"github.com/tangram-dev/tangram/mq"

	cdplog "github.com/chromedp/cdproto/log"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/registry"
	"github.com/tangram-dev/tangram/server/servertest"
)

func chromium(t *testing.T) string {
	for _, p := range []string{os.Getenv("TANGRAM_TEST_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("console test needs Debian's chromium: run scripts/services.sh (apt-get install chromium) or set TANGRAM_TEST_CHROMIUM")
	return ""
}

// browser starts headless Chromium with the flags this machine needs (see
// the env notes: no background networking, no QUIC) for at most 90 s; it is
// stopped when the test ends.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	ctx, cancelT := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() { cancelT(); cancel(); cancelA() })
	// Every page the test visits must load without a Content Security
	// Policy violation or a script error: the console's own CSP allows no
	// inline styles or scripts, and a template that uses one breaks its
	// layout silently.
	var mu sync.Mutex
	var problems []string
	if err := chromedp.Listen(ctx, func(ev any) {
		switch e := ev.(type) {
		case *cdplog.EventEntryAdded:
			if e.Entry.Level == cdplog.EntryLevelError || strings.Contains(e.Entry.Text, "Content Security Policy") {
				mu.Lock()
				problems = append(problems, fmt.Sprintf("%s %s: %s (%s)", e.Entry.Level, e.Entry.Source, e.Entry.Text, e.Entry.URL))
				mu.Unlock()
			}
		case *cdpruntime.EventExceptionThrown:
			mu.Lock()
			problems = append(problems, "script exception: "+e.ExceptionDetails.Text)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // runs before the browser is stopped
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			if strings.Contains(p, "favicon.ico") {
				continue // no icon: a 404 the browser logs, not the console's doing
			}
			if strings.HasPrefix(p, "error network:") && !strings.Contains(p, "/static/") {
				continue // a page's own status (a 404 page is a 404); its resources must load
			}
			t.Errorf("browser: %s", p)
		}
	})
	return ctx
}

// TestConsoleBrowser signs in with headless Chromium, creates an app,
// edits, publishes, and rolls back through the console's forms.
func TestConsoleBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	h := servertest.Start(t)
	ctx := browser(t)

	var flash, body string
	page := func() string {
		html, _ := chromedp.Run(context.WithoutCancel(ctx), chromedp.OuterHTML(chromedp.CSS("body")))
		return html
	}
	// step runs actions; when the document was replaced under them (a node
	// found, then gone: the page reloaded after a form post) it runs them
	// again — the error comes from resolving a node, before any input.
	step := func(name string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		var err error
		for try := 0; try < 3; try++ {
			if err = chromedp.Do(ctx, actions...); err == nil || !strings.Contains(err.Error(), "No node with given id") {
				break
			}
		}
		if err != nil {
			t.Fatalf("%s: %v\npage: %.2000s", name, err, page())
		}
	}
	text := func(sel chromedp.CSS) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v\npage: %.2000s", sel, err, page())
		}
		return strings.TrimSpace(s)
	}
	// waitFlash waits for the page that follows a form post to show a message.
	waitFlash := func(want string) string {
		t.Helper()
		var f string
		var err error
		if !wait.Until(20*time.Second, func() bool {
			f, err = chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById("flash")||document.getElementById("error")||{}).innerText||""`))
			return err == nil && strings.Contains(f, want)
		}) {
			t.Fatalf("no message containing %q (last %q, %v)\npage: %.2000s", want, f, err, page())
		}
		return f
	}
	id := func(s string) chromedp.ID { return chromedp.ID(s) }
	// Unauthenticated pages redirect to the login form.
	step("login page", chromedp.Navigate(h.URL+"/config"), chromedp.WaitVisible(id("login")))
	step("sign in",
		chromedp.SetValue(id("user"), "admin"),
		chromedp.SetValue(id("secret"), h.Token),
		chromedp.Click(id("login")),
		chromedp.WaitVisible(id("create-app")))
	if body = text("#whoami"); body != "admin" {
		t.Fatalf("signed in as %q", body)
	}
	step("create app",
		chromedp.SetValue(id("new-app"), "shop"),
		chromedp.Click(id("create-app")))
	waitFlash("app shop created")
	setAndPublish := func(value, comment string) {
		step("set "+value,
			chromedp.SetValue(id("set-key"), "greeting"),
			chromedp.SetValue(id("set-value"), value),
			chromedp.Click(id("set-submit")))
		waitFlash("saved greeting")
		step("publish "+comment,
			chromedp.SetValue(id("publish-comment"), comment),
			chromedp.Click(id("publish-submit")))
		waitFlash("published version")
	}
	step("open namespace", chromedp.Navigate(h.URL+"/config/dev/shop"), chromedp.Click(id("ns-application")), chromedp.WaitVisible(id("set-form")))
	setAndPublish("hello", "first")
	setAndPublish("hi", "second")
	step("rollback", chromedp.Click(id("rollback-submit")))
	flash, body = waitFlash("rolled back"), text("#history")
	if !strings.Contains(flash, "rolled back") || !strings.Contains(body, "rollback") {
		t.Fatalf("after rollback: flash %q history %q", flash, body)
	}
	if body = text(`td.v[data-key="greeting"]`); body != "hello" {
		t.Fatalf("draft after rollback = %q", body)
	}
	// Diff any two releases: v1 ("hello") against v2 ("hi").
	step("diff page", chromedp.Navigate(h.URL+"/config/dev/shop/default/application/diff?from=1&to=2"), chromedp.WaitVisible(id("diff")))
	if body = text("#diff"); !strings.Contains(body, "modified") || !strings.Contains(body, "hello") || !strings.Contains(body, "hi") {
		t.Fatalf("diff page: %q", body)
	}
	// The released value, as the API sees it.
	req, _ := http.NewRequest("GET", h.URL+"/api/v1/config/envs/dev/apps/shop/clusters/default/namespaces/application/items/greeting", nil)
	req.Header.Set("Authorization", "Bearer "+h.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	if !strings.Contains(b.String(), `"value":"hello"`) {
		t.Fatalf("released value after console rollback: %s", b.String())
	}
	// TANGRAM_SCREENSHOTS=dir saves the pages as PNGs (for docs and review).
	if dir := os.Getenv("TANGRAM_SCREENSHOTS"); dir != "" {
		for name, path := range map[string]string{"apps": "/config", "app": "/config/dev/shop", "namespace": "/config/dev/shop/default/application", "diff": "/config/dev/shop/default/application/diff?from=1&to=2"} {
			step("shot "+name, chromedp.Navigate(h.URL+path))
			png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The audit page shows what happened.
	step("audit", chromedp.Navigate(h.URL+"/audit"), chromedp.WaitVisible(id("audit")))
	body = text("#audit")
	for _, a := range []string{"config.rollback", "config.publish", "config.app.create", "auth.login"} {
		if !strings.Contains(body, a) {
			t.Errorf("audit page lacks %s", a)
		}
	}
}

// TestConsoleCSRF: a form post with the session cookie but without the
// CSRF token is refused.
func TestConsoleCSRF(t *testing.T) {
	h := servertest.Start(t)
	jar := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp := postLogin(t, jar, h.URL, "admin", h.Token, "")
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "tangram_session" {
			sess = c
		}
	}
	if sess == nil || !sess.HttpOnly {
		t.Fatalf("no HttpOnly session cookie: %+v", resp.Cookies())
	}
	req, _ := http.NewRequest("POST", h.URL+"/config/apps", strings.NewReader("name=evil"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(sess)
	resp, err := jar.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("post without CSRF token: %d", resp.StatusCode)
	}
	// The same applies to the JSON API reached with the cookie.
	req, _ = http.NewRequest("POST", h.URL+"/api/v1/config/apps", strings.NewReader(`{"name":"evil"}`))
	req.AddCookie(sess)
	resp, err = jar.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("API post with cookie but no CSRF header: %d", resp.StatusCode)
	}
	// Wrong password.
	resp = postLogin(t, jar, h.URL, "admin", "nope", "")
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "err=") {
		t.Fatalf("bad login redirect: %q", loc)
	}
}

// TestConsoleUsers: an admin creates a user and a token from the console;
// the token works against the API; a non-admin is refused the page.
func TestConsoleUsers(t *testing.T) {
	h := servertest.Start(t)
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	login := func(user, secret string) {
		postLogin(t, hc, h.URL, user, secret, "")
	}
	page := func(method, path string, form url.Values) (int, string) {
		var resp *http.Response
		var err error
		if method == "GET" {
			resp, err = hc.Get(h.URL + path)
		} else {
			resp, err = hc.PostForm(h.URL+path, form)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	csrf := func(body string) string { return csrfOf(t, body) }
	login("admin", h.Token)
	_, body := page("GET", "/users", nil)
	tok := csrf(body)
	if code, body := page("POST", "/users", url.Values{"csrf": {tok}, "name": {"vera"}, "password": {"long enough"}, "role": {"viewer"}}); code != 200 || !strings.Contains(body, "vera") {
		t.Fatalf("create user: %d", code)
	}
	code, body := page("POST", "/tokens", url.Values{"csrf": {tok}, "user": {"vera"}, "name": {"ci"}})
	i := strings.Index(body, "<code>tgm_")
	if code != 200 || i < 0 {
		t.Fatalf("create token: %d", code)
	}
	secret := body[i+len("<code>") : i+strings.Index(body[i:], "</code>")]
	var who struct{ Name string }
	if err := apiclient.New(h.URL, secret).Do(context.Background(), "GET", "/api/v1/auth/whoami", nil, &who); err != nil || who.Name != "vera" {
		t.Fatalf("token from the console: %v %+v", err, who)
	}
	// The admin sets vera's password from the page; the old one stops working.
	if code, body := page("POST", "/users/vera/password", url.Values{"csrf": {tok}, "password": {"another long one"}}); code != 200 || !strings.Contains(body, "password of vera set") {
		t.Fatalf("set password: %d", code)
	}
	// vera is a viewer: the users page is refused.
	jar2, _ := cookiejar.New(nil)
	hc = &http.Client{Jar: jar2}
	if resp := postLogin(t, hc, h.URL, "vera", "long enough", ""); resp.Request.URL.Path != "/login" {
		t.Fatalf("the old password still signs in (landed on %s)", resp.Request.URL)
	}
	login("vera", "another long one")
	if code, _ := page("GET", "/users", nil); code != http.StatusForbidden {
		t.Fatalf("viewer on the users page: %d", code)
	}
}

// TestConsoleYAMLNamespace drives a yaml namespace through the console's
// forms: bad yaml is refused at publish with its line, good yaml publishes.
func TestConsoleYAMLNamespace(t *testing.T) {
	h := servertest.Start(t)
	hc, get := adminSession(t, h)
	body := get("/config")
	csrf := csrfOf(t, body)
	post := func(path string, form url.Values) string {
		form.Set("csrf", csrf)
		req, _ := http.NewRequest("POST", h.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Referer", h.URL+"/config/dev/shop/default/app.yaml")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	post("/config/apps", url.Values{"name": {"shop"}})
	post("/config/dev/shop/default/-/namespaces", url.Values{"name": {"app.yaml"}, "format": {"yaml"}})
	page := post("/config/dev/shop/default/app.yaml/set", url.Values{"key": {"content"}, "value": {"server:\n  port: [80\n"}})
	if !strings.Contains(page, "saved content") || !strings.Contains(page, `<textarea name="value" id="set-value">server:`) {
		t.Fatalf("yaml draft not shown in the editor:\n%.1500s", page)
	}
	page = post("/config/dev/shop/default/app.yaml/publish", url.Values{"comment": {"bad"}, "mode": {"publish"}})
	if !strings.Contains(page, `id="error"`) || !strings.Contains(page, "invalid yaml at line") {
		t.Fatalf("bad yaml published or error without a line:\n%.1500s", page)
	}
	post("/config/dev/shop/default/app.yaml/set", url.Values{"key": {"content"}, "value": {"server:\n  port: 80\n"}})
	page = post("/config/dev/shop/default/app.yaml/publish", url.Values{"comment": {"good"}, "mode": {"publish"}})
	if !strings.Contains(page, "published version 1") {
		t.Fatalf("good yaml not published:\n%.1500s", page)
	}
}

// The registry pages: status with self-preservation, services with zones,
// instances with health, and a drain from the console (audited).
func TestConsoleRegistry(t *testing.T) {
	h := servertest.Start(t)
	reg := h.Srv.Registry()
	for i, z := range []string{"az1", "az2"} {
		if _, err := reg.Register(context.Background(), registry.Instance{Key: registry.Key{Service: "pay"}, Host: "10.0.0." + strconv.Itoa(i+1),
			Port: 80, Weight: 100, Zone: z, Enabled: true, Ephemeral: true}); err != nil {
			t.Fatal(err)
		}
	}
	hc, get := adminSession(t, h)
	body := get("/registry")
	for _, want := range []string{`id="self-preservation">off`, `id="svc-pay"`, "az1 (1), az2 (1)"} {
		if !strings.Contains(body, want) {
			t.Fatalf("registry page lacks %q:\n%s", want, body)
		}
	}
	body = get("/registry/public/default/pay")
	if !strings.Contains(body, "10.0.0.1:80") || !strings.Contains(body, "healthy") {
		t.Fatalf("service page:\n%s", body)
	}
	csrf := csrfOf(t, body)
	req, _ := http.NewRequest("POST", h.URL+"/registry/public/default/pay/10.0.0.1:80/drain", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !strings.Contains(get("/registry/public/default/pay"), "drained") {
		t.Fatal("drain not shown")
	}
	if !strings.Contains(get("/audit"), "registry.update") {
		t.Fatal("drain not audited")
	}
	// Metadata (a persistent instance's probe is one) is edited too.
	req, _ = http.NewRequest("POST", h.URL+"/registry/public/default/pay/10.0.0.1:80/metadata", strings.NewReader(url.Values{"csrf": {csrf}, "metadata": {"version=2 zone=az9"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if resp, err = hc.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if page := get("/registry/public/default/pay"); !strings.Contains(page, "version=2") || !strings.Contains(page, "zone=az9") {
		t.Fatalf("metadata not set:\n%.2500s", page)
	}
}

// adminSession signs in to the console as the admin and returns the client
// (cookies) and a GET helper returning the page body.
func adminSession(t *testing.T, h *servertest.Harness) (*http.Client, func(path string) string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	postLogin(t, hc, h.URL, "admin", h.Token, "")
	return hc, func(path string) string {
		resp, err := hc.Get(h.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
}

var loginCSRFField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrfOf returns the CSRF field of a console page's forms; the test fails
// if the page has none.
func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := loginCSRFField.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF field in page:\n%.1500s", body)
	}
	return m[1]
}

// postLogin signs in through the form as a browser does: it loads the
// sign-in page (which sets the form's CSRF cookie and field) and posts the
// form with both. The response is returned unfollowed when hc does not
// follow redirects.
func postLogin(t *testing.T, hc *http.Client, base, user, secret, next string) *http.Response {
	t.Helper()
	resp, err := hc.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := loginCSRFField.FindSubmatch(body)
	if m == nil {
		t.Fatalf("the sign-in page has no CSRF field:\n%s", body)
	}
	form := url.Values{"user": {user}, "secret": {secret}, "csrf": {string(m[1])}, "next": {next}}
	req, _ := http.NewRequest("POST", base+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for _, c := range resp.Cookies() {
		req.AddCookie(c)
	}
	out, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out.Body.Close()
	return out
}

// TestLoginForm: the sign-in form needs its CSRF pair, and the page it
// returns to is a path on this site only.
func TestLoginForm(t *testing.T) {
	h := servertest.Start(t)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// A cross-site form post has no CSRF cookie: refused, no session.
	resp, err := noFollow.PostForm(h.URL+"/login", url.Values{"user": {"admin"}, "secret": {h.Token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, c := range resp.Cookies() {
		if c.Name == "tangram_session" && c.Value != "" {
			t.Fatal("a sign-in without the form's CSRF token opened a session")
		}
	}
	if loc := resp.Header.Get("Location"); !strings.Contains(loc, "err=") {
		t.Fatalf("sign-in without CSRF: %q", loc)
	}
	for next, want := range map[string]string{
		"/config/apps?x=1":      "/config/apps?x=1",
		"/\\evil.example":       "/overview",
		"//evil.example":        "/overview",
		"/\\/evil.example":      "/overview",
		"https://evil.example/": "/overview",
		"/%0d%0aSet-Cookie:x":   "/%0d%0aSet-Cookie:x",
		"javascript:alert(1)":   "/overview",
	} {
		resp := postLogin(t, noFollow, h.URL, "admin", h.Token, next)
		if loc := resp.Header.Get("Location"); loc != want {
			t.Errorf("next=%q: redirected to %q, want %q", next, loc, want)
		}
	}
}

// TestAPIPage: the console lists the HTTP API and links its OpenAPI
// document, which a signed-in browser can fetch with its session.
func TestAPIPage(t *testing.T) {
	h := servertest.Start(t)
	hc, get := adminSession(t, h)
	page := get("/api-docs")
	for _, want := range []string{`href="/api/v1/openapi.yaml"`, "/api/v1/config/watch", "/api/v1/registry/services/{ns}/{group}/{service}/watch", "/api/v1/auth/tokens"} {
		if !strings.Contains(page, want) {
			t.Errorf("API page lacks %s", want)
		}
	}
	resp, err := hc.Get(h.URL + "/api/v1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "openapi: 3.1.0") {
		t.Fatalf("openapi.yaml with a session: %d %.100s", resp.StatusCode, body)
	}
}

// The console's CSP (style-src 'self', default-src 'self') refuses inline
// styles and scripts: no template may carry one.
func TestTemplatesHaveNoInlineStylesOrScripts(t *testing.T) {
	files, err := filepath.Glob("templates/*.html")
	if err != nil || len(files) == 0 {
		t.Fatalf("templates: %v %v", files, err)
	}
	inline := regexp.MustCompile(`(?i)\sstyle\s*=|<style[\s>]|<script>|<script\s+[^>]*\bon\w+=|\son(click|load|submit|change|input)\s*=`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, l := range strings.Split(string(b), "\n") {
			if inline.MatchString(l) {
				t.Errorf("%s:%d: inline style or script, refused by the console's CSP: %s", f, i+1, strings.TrimSpace(l))
			}
		}
	}
}

// Errors and unknown pages are shown inside the console's layout with their
// status; an unknown registry service is a 404, not an empty list; the
// navigation is hidden from someone not signed in.
func TestErrorPagesInLayout(t *testing.T) {
	h := servertest.Start(t)
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar}
	get := func(path string) (int, string) {
		resp, err := hc.Get(h.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if _, body := get("/login"); strings.Contains(body, `href="/config"`) {
		t.Fatal("the navigation shows to someone not signed in")
	}
	postLogin(t, hc, h.URL, "admin", h.Token, "")
	for path, want := range map[string]int{"/no/such/page": 404, "/registry/public/default/nosuch": 404, "/config/dev/nosuchapp": 404} {
		code, body := get(path)
		if code != want || !strings.Contains(body, `id="page-error"`) || !strings.Contains(body, "site-footer") || !strings.Contains(body, `href="/config"`) {
			t.Errorf("%s: %d, want %d inside the layout:\n%.600s", path, code, want, body)
		}
	}
	if code, _ := get("/api/v1/nosuch"); code != 404 && code != 401 {
		t.Errorf("/api/v1/nosuch: %d (the API answers its own JSON errors)", code)
	}
}

// The audit page filters by actor, action and resource, and its pages keep
// the filter.
func TestAuditPageFilters(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	for _, app := range []string{"alpha", "beta"} {
		if err := c.Do(context.Background(), "POST", "/api/v1/config/apps", map[string]any{"name": app}, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, get := adminSession(t, h)
	body := get("/audit?action=config.app&resource=app/alpha")
	if !strings.Contains(body, "app/alpha") || strings.Contains(body, "app/beta") {
		t.Fatalf("filtered audit page:\n%.2000s", body)
	}
	if body := get("/audit?actor=nobody"); !strings.Contains(body, "match the filter") {
		t.Fatalf("no match:\n%.1500s", body)
	}
	// A time window, in the console (UTC date-time fields) and the API.
	future := time.Now().UTC().Add(time.Hour)
	if body := get("/audit?since=" + future.Format("2006-01-02T15:04")); !strings.Contains(body, "match the filter") {
		t.Fatalf("since an hour from now:\n%.1500s", body)
	}
	if body := get("/audit?until=" + future.Format("2006-01-02T15:04") + "&resource=app/beta"); !strings.Contains(body, "app/beta") {
		t.Fatalf("until an hour from now:\n%.1500s", body)
	}
	var l struct{ Items []map[string]any }
	if err := c.Do(context.Background(), "GET", "/api/v1/audit?since="+url.QueryEscape(future.Format(time.RFC3339)), nil, &l); err != nil || len(l.Items) != 0 {
		t.Fatalf("API since the future: %d entries, %v", len(l.Items), err)
	}
	if err := c.Do(context.Background(), "GET", "/api/v1/audit?since=yesterday", nil, &l); err == nil || !strings.Contains(err.Error(), "since") {
		t.Fatalf("a bad since: %v", err)
	}
}

// The home page is the platform at a glance: the components, this server,
// and counts of what the user may see.
func TestOverviewPage(t *testing.T) {
	h := servertest.Start(t)
	if err := h.Client().Do(context.Background(), "POST", "/api/v1/config/apps", map[string]any{"name": "alpha"}, nil); err != nil {
		t.Fatal(err)
	}
	_, get := adminSession(t, h)
	body := get("/")
	for _, want := range []string{`id="overview"`, `id="count-apps">1<`, `id="count-jobs">0<`, "registry", "mq", `id="node"`} {
		if !strings.Contains(body, want) {
			t.Fatalf("overview lacks %s:\n%.3000s", want, body)
		}
	}
}

// Every top-level page, in a 1280-pixel window: it loads without a CSP
// violation or a script error (the browser helper checks) and nothing
// overflows — no page wider than the window, no cell's content spilling out
// of its cell. TANGRAM_SCREENSHOTS=dir saves each as a JPEG (docs/console/).
func TestEveryPageFitsAndLoadsClean(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	h := servertest.Start(t)
	if err := h.Client().Do(context.Background(), "POST", "/api/v1/config/apps", map[string]any{"name": "shop"}, nil); err != nil {
		t.Fatal(err)
	}
	ctx := browser(t)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900),
		chromedp.Navigate(h.URL+"/login"), chromedp.WaitVisible(chromedp.ID("login")),
		chromedp.SetValue(chromedp.ID("user"), "admin"), chromedp.SetValue(chromedp.ID("secret"), h.Token),
		chromedp.Click(chromedp.ID("login")), chromedp.WaitVisible(chromedp.ID("whoami"))); err != nil {
		t.Fatal(err)
	}
	if err := h.Client().Do(context.Background(), "POST", "/api/v1/registry/instances",
		map[string]any{"namespace": "public", "group": "default", "service": "pay", "host": "10.0.0.1", "port": 80, "ephemeral": true,
			"metadata": map[string]string{"version": "2", "zone": "az1", "a-rather-long-metadata-key": strings.Repeat("long-value-", 8)}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/overview", "/config", "/config/dev/shop", "/config/dev/shop/default/application", "/registry",
		"/registry/public/default/pay", "/jobs", "/jobs/new", "/mq", "/users", "/audit", "/api-docs", "/no/such/page"} {
		fits(t, ctx, h.URL, path)
	}
}

// overflow lists what spills out of the page or out of a table cell.
const overflow = `(() => {
  const out = [];
  if (document.documentElement.scrollWidth > window.innerWidth + 1) out.push("the page is " + document.documentElement.scrollWidth + "px wide");
  for (const c of document.querySelectorAll("td, th")) {
    for (const e of c.children) {
      const a = e.getBoundingClientRect(), b = c.getBoundingClientRect();
      if (a.right > b.right + 1 || a.left < b.left - 1) out.push(c.tagName + " '" + c.innerText.slice(0, 40) + "' spills");
    }
  }
  return out.join("; ");
})()`

// fits loads path in a 1280×900 window of the signed-in browser and fails
// the test if the page is wider than the window or anything spills out of
// a table cell; with TANGRAM_SCREENSHOTS set it saves a screenshot there
// (docs/console holds the published ones). browser() already fails the
// test on any CSP violation or script error the page causes.
func fits(t *testing.T, ctx context.Context, base, path string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900), chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.CSS("footer"))); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	bad, err := chromedp.Run(ctx, chromedp.Evaluate[string](overflow))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if bad != "" {
		t.Errorf("%s: %s", path, bad)
	}
	if dir := os.Getenv("TANGRAM_SCREENSHOTS"); dir != "" {
		img, err := chromedp.Run(ctx, chromedp.FullScreenshot(80)) // JPEG below quality 100
		if err == nil {
			name := strings.Trim(strings.ReplaceAll(path, "/", "-"), "-")
			_ = os.WriteFile(filepath.Join(dir, name+".jpg"), img, 0o644)
		}
	}
}

// The registry page switches namespaces and searches services.
func TestRegistryPageFilters(t *testing.T) {
	h := servertest.Start(t)
	for _, in := range []map[string]any{
		{"namespace": "public", "group": "default", "service": "orders", "host": "10.0.0.1", "port": 80, "ephemeral": true},
		{"namespace": "prod", "group": "default", "service": "payments", "host": "10.0.0.2", "port": 80, "ephemeral": true},
	} {
		if err := h.Client().Do(context.Background(), "POST", "/api/v1/registry/instances", in, nil); err != nil {
			t.Fatal(err)
		}
	}
	_, get := adminSession(t, h)
	if body := get("/registry?namespace=prod"); !strings.Contains(body, `id="svc-payments"`) || strings.Contains(body, `id="svc-orders"`) {
		t.Fatalf("namespace prod:\n%.2500s", body)
	}
	if body := get("/registry?q=ORD"); !strings.Contains(body, `id="svc-orders"`) || strings.Contains(body, `id="svc-payments"`) {
		t.Fatalf("search ord:\n%.2500s", body)
	}
	if body := get("/registry?q=nothing"); !strings.Contains(body, "No service matches") {
		t.Fatalf("search with no match:\n%.2500s", body)
	}
}

// Jobs are created and edited from the console's form: a bad value comes
// back with the field named and the values kept; an edit keeps what the
// form does not show (children here).
func TestJobForm(t *testing.T) {
	h := servertest.Start(t)
	hc, get := adminSession(t, h)
	body := get("/jobs/new")
	csrf := csrfOf(t, body)
	post := func(path string, form url.Values) (int, string) {
		form.Set("csrf", csrf)
		resp, err := hc.PostForm(h.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	form := url.Values{"name": {"nightly"}, "app": {"demo"}, "handler": {"hello"}, "kind": {"cron"}, "cron": {"61 * * * * *"},
		"route": {"round_robin"}, "block": {"serial"}, "misfire": {"fire_once"}, "retries": {"2"}, "enabled": {"on"}}
	code, body := post("/jobs/new", form)
	if code != 400 || !strings.Contains(body, `id="form-error"`) || !strings.Contains(body, "cron") || !strings.Contains(body, `value="nightly"`) {
		t.Fatalf("a bad cron: %d\n%.2000s", code, body)
	}
	form.Set("cron", "0 0 2 * * *")
	code, body = post("/jobs/new", form)
	if code != 200 || !strings.Contains(body, "job nightly created") {
		t.Fatalf("create: %d\n%.2000s", code, body)
	}
	var jobs struct{ Items []job.Job }
	if err := h.Client().Do(context.Background(), "GET", "/api/v1/jobs", nil, &jobs); err != nil || len(jobs.Items) != 1 {
		t.Fatalf("jobs: %+v %v", jobs, err)
	}
	j := jobs.Items[0]
	if j.Trigger.Cron != "0 0 2 * * *" || j.Retries != 2 || !j.Enabled {
		t.Fatalf("created %+v", j)
	}
	// Give it a child through the API; the form's edit keeps it.
	child := map[string]any{"name": "after", "app": "demo", "handler": "hello", "trigger": map[string]any{"kind": "manual"}}
	var cj job.Job
	if err := h.Client().Do(context.Background(), "POST", "/api/v1/jobs", child, &cj); err != nil {
		t.Fatal(err)
	}
	j.Children = []int64{cj.ID}
	if err := h.Client().Do(context.Background(), "PUT", fmt.Sprintf("/api/v1/jobs/%d", j.ID), j, nil); err != nil {
		t.Fatal(err)
	}
	form.Set("kind", "rate")
	form.Set("every", "90s")
	form.Del("enabled")
	if code, body := post(fmt.Sprintf("/jobs/edit/%d", j.ID), form); code != 200 || !strings.Contains(body, "job nightly saved") {
		t.Fatalf("edit: %d\n%.2000s", code, body)
	}
	var got job.Job
	if err := h.Client().Do(context.Background(), "GET", fmt.Sprintf("/api/v1/jobs/%d", j.ID), nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.Trigger.Kind != "rate" || got.Trigger.Every.D() != 90*time.Second || got.Enabled || len(got.Children) != 1 {
		t.Fatalf("edited %+v", got)
	}
}

// From a topic's page: a test message is sent, and a queue is browsed from
// an offset (nothing consumed).
func TestTopicSendAndBrowse(t *testing.T) {
	h := servertest.Start(t)
	mc, err := mq.NewClient(context.Background(), mq.Config{Servers: []string{h.Srv.RPCAddr()}, Token: servertest.AdminToken})
	if err != nil {
		t.Fatal(err)
	}
	defer mc.Close()
	if err := mc.CreateTopic(context.Background(), "probe", 2, false); err != nil {
		t.Fatal(err)
	}
	hc, get := adminSession(t, h)
	body := get("/mq")
	csrf := csrfOf(t, body)
	resp, err := hc.PostForm(h.URL+"/mq/topics/probe/send", url.Values{"csrf": {csrf}, "body": {"hello browser"}, "key": {"k1"}})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "sent ") {
		t.Fatalf("send:\n%.2000s", b)
	}
	m := regexp.MustCompile(`to queue (\d+)`).FindStringSubmatch(string(b))
	page := get("/mq/topics/probe")
	bm := regexp.MustCompile(`id="browse-([^"]+)-` + m[1] + `"`).FindStringSubmatch(page)
	if bm == nil {
		t.Fatalf("no browse link for queue %s:\n%.2500s", m[1], page)
	}
	if page := get("/mq/topics/probe?broker=" + bm[1] + "&queue=" + m[1] + "&offset=0"); !strings.Contains(page, "hello browser") || !strings.Contains(page, "k1") {
		t.Fatalf("browse:\n%.3000s", page)
	}
}

// A namespace's draft is searched, and edited as one properties document
// (text mode): changes saved, removed keys deleted, secrets left alone.
func TestNamespaceTextModeAndSearch(t *testing.T) {
	h := servertest.Start(t)
	c := h.Client()
	ctx := context.Background()
	if err := c.Do(ctx, "POST", "/api/v1/config/apps", map[string]any{"name": "shop"}, nil); err != nil {
		t.Fatal(err)
	}
	const ns = "/config/dev/shop/default/application"
	api := "/api/v1/config/envs/dev/apps/shop/clusters/default/namespaces/application"
	edit := config.Edit{Set: []config.Item{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "pw", Value: "s3cret", Secret: true}}}
	if err := c.Do(ctx, "POST", api+"/draft", edit, nil); err != nil {
		t.Fatal(err)
	}
	hc, get := adminSession(t, h)
	body := get(ns)
	if strings.Contains(body, "s3cret") || !strings.Contains(body, `id="text-value"`) {
		t.Fatalf("namespace page:\n%.3000s", body)
	}
	csrf := csrfOf(t, body)
	req, _ := http.NewRequest("POST", h.URL+ns+"/text", strings.NewReader(url.Values{"csrf": {csrf}, "text": {"a=10\nc=3\n"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Referer", h.URL+ns)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "2 set, 1 deleted") {
		t.Fatalf("text mode:\n%.2000s", b)
	}
	var items struct{ Items []config.Item }
	if err := c.Do(ctx, "GET", api+"?secrets=1", nil, &items); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, it := range items.Items {
		got[it.Key] = it.Value
		if it.Key == "pw" && !it.Secret {
			t.Fatal("the secret lost its flag")
		}
	}
	if got["a"] != "10" || got["c"] != "3" || got["b"] != "" || got["pw"] == "" {
		t.Fatalf("draft after the text: %v", got)
	}
	if body := get(ns + "?q=c"); !strings.Contains(body, `data-key="c"`) || strings.Contains(body, `data-key="a"`) {
		t.Fatalf("search:\n%.3000s", body)
	}
}

// An admin edits a glue job's code from its page: each save is a new
// version; a rollback brings an earlier one back as the newest.
func TestGlueEditor(t *testing.T) {
	h := servertest.Start(t)
	var j job.Job
	if err := h.Client().Do(context.Background(), "POST", "/api/v1/jobs", map[string]any{"name": "disk", "app": "demo", "handler": "glue:shell",
		"trigger": map[string]any{"kind": "manual"}}, &j); err != nil {
		t.Fatal(err)
	}
	hc, get := adminSession(t, h)
	body := get(fmt.Sprintf("/jobs/%d", j.ID))
	if !strings.Contains(body, `id="glue-source"`) {
		t.Fatalf("no glue editor:\n%.2000s", body)
	}
	csrf := csrfOf(t, body)
	post := func(path string, form url.Values) string {
		form.Set("csrf", csrf)
		resp, err := hc.PostForm(h.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if b := post(fmt.Sprintf("/jobs/glue/%d", j.ID), url.Values{"source": {"echo one"}, "note": {"first"}}); !strings.Contains(b, "glue version 1 saved") {
		t.Fatalf("save 1:\n%.1500s", b)
	}
	if b := post(fmt.Sprintf("/jobs/glue/%d", j.ID), url.Values{"source": {"echo two"}, "note": {"second"}}); !strings.Contains(b, "glue version 2 saved") {
		t.Fatalf("save 2:\n%.1500s", b)
	}
	if b := post(fmt.Sprintf("/jobs/glue/%d/rollback", j.ID), url.Values{"version": {"1"}}); !strings.Contains(b, "now version 3") || !strings.Contains(b, "echo one") {
		t.Fatalf("rollback:\n%.2500s", b)
	}
}

// tab drives one browser for a test: each helper fails the test with the
// page's HTML when the browser cannot do what is asked.
type tab struct {
	t   *testing.T
	ctx context.Context
}

func newTab(t *testing.T) *tab { return &tab{t: t, ctx: browser(t)} }

// page is the current page's body, for failure messages.
func (b *tab) page() string {
	html, _ := chromedp.Run(context.WithoutCancel(b.ctx), chromedp.OuterHTML(chromedp.CSS("body")))
	return html
}

// step runs actions, failing the test with the page when one fails.
func (b *tab) step(name string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\npage: %.3000s", name, err, b.page())
	}
}

// eval is a script's numeric result.
func (b *tab) eval(js string) float64 {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[float64](js))
	if err != nil {
		b.t.Fatalf("%s: %v", js, err)
	}
	return v
}

// text is the text of the element sel selects.
func (b *tab) text(sel string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		b.t.Fatalf("text of %s: %v\npage: %.3000s", sel, err, b.page())
	}
	return s
}

// signIn logs in as the admin with token, starting at path.
func (b *tab) signIn(base, path, token string) {
	b.t.Helper()
	b.step("sign in", chromedp.Navigate(base+path), chromedp.WaitVisible(chromedp.ID("login")),
		chromedp.SetValue(chromedp.ID("user"), "admin"), chromedp.SetValue(chromedp.ID("secret"), token), chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("whoami")))
}
