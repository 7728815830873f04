package server_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tangram-dev/tangram/internal/apiclient"
	"github.com/tangram-dev/tangram/internal/apidoc"
	"github.com/tangram-dev/tangram/mq"
	"github.com/tangram-dev/tangram/server"
	"github.com/tangram-dev/tangram/server/servertest"
)

// TestUnknownAPIPathsNeedAuth: without a token, an unknown /api path
// answers 401 like a known one, so routes cannot be enumerated.
func TestUnknownAPIPathsNeedAuth(t *testing.T) {
	h := servertest.Start(t)
	for _, p := range []string{"/api/v1/nope", "/api/v1/config/apps", "/api/v2/anything", "/api/v1/auth/users/x/nothing"} {
		resp, err := http.Get(h.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s without a token: %d, want 401", p, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", h.URL+"/api/v1/nope", nil)
	req.Header.Set("Authorization", "Bearer "+h.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown path with a token: %d", resp.StatusCode)
	}
}

// TestDataDirPrivate: the data directory and the SQLite database (password
// and token hashes, encrypted secrets) are readable by their owner only.
func TestDataDirPrivate(t *testing.T) {
	if os.Getenv("TANGRAM_TEST_STORE") != "" && os.Getenv("TANGRAM_TEST_STORE") != "sqlite" {
		t.Skip("the SQLite file is under test")
	}
	dir := filepath.Join(t.TempDir(), "data")
	servertest.Start(t, servertest.WithDataDir(dir))
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v", fi.Mode(), err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "tangram.db") {
			fi, err := os.Stat(filepath.Join(dir, e.Name()))
			if err != nil || fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("%s: mode %v %v", e.Name(), fi.Mode(), err)
			}
		}
	}
}

// TestTopicNeedsQueues: zero queues is refused, not silently the default.
func TestTopicNeedsQueues(t *testing.T) {
	h := servertest.Start(t)
	c, err := mq.NewClient(context.Background(), mq.Config{Servers: []string{h.Srv.RPCAddr()}, Token: h.Token})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.CreateTopic(context.Background(), "zero", 0, false)
	if err == nil || !strings.Contains(err.Error(), "0 queues") {
		t.Fatalf("0 queues: %v", err)
	}
}

// TestConnectionLimits: connections over the cap are closed on arrival;
// an idle connection that carried no authenticated request is closed
// after the short timeout, while an authenticated one stays.
func TestConnectionLimits(t *testing.T) {
	h := servertest.Start(t, servertest.WithConnLimits(3, time.Second))
	addr := strings.TrimPrefix(h.URL, "http://")
	roundTrip := func(c net.Conn, auth bool) {
		t.Helper()
		req := "GET /api/v1/version HTTP/1.1\r\nHost: x\r\n"
		if auth {
			req += "Authorization: Bearer " + h.Token + "\r\n"
		}
		if _, err := c.Write([]byte(req + "\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	anon, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	roundTrip(anon, false)
	authed, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer authed.Close()
	roundTrip(authed, true)
	// The anonymous one is closed by the server once idle 1 s.
	_ = anon.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := anon.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("an idle anonymous connection was kept: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %s", d)
	}
	// The authenticated one still answers.
	roundTrip(authed, true)
	// Over the cap (3): the extra connections are closed on arrival.
	var extra []net.Conn
	defer func() {
		for _, c := range extra {
			c.Close()
		}
	}()
	closed := 0
	for i := 0; i < 4; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		extra = append(extra, c)
	}
	for _, c := range extra {
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			closed++
		}
	}
	if closed < 2 {
		t.Fatalf("%d of 4 connections over a cap of 3 (one held) were closed", closed)
	}
}

// TestOpenAPIDocument: the document lists exactly the API routes a server
// with every component mounts, the committed docs/openapi.yaml is the
// current output, and the server serves it.
func TestOpenAPIDocument(t *testing.T) {
	var checked atomic.Int64
	h := servertest.Start(t, func(c *server.Config) {
		check := c.CheckAPIResponse
		c.CheckAPIResponse = func(method, path, pattern string, status int, body []byte) {
			checked.Add(1)
			check(method, path, pattern, status, body)
		}
	})
	defer func() {
		if checked.Load() == 0 {
			t.Error("no API response was held against the document")
		}
	}()
	mounted := h.Srv.MountedAPI()
	documented := apidoc.Paths(server.APIRoutes())
	if strings.Join(mounted, "\n") != strings.Join(documented, "\n") {
		in := func(l []string) map[string]bool {
			m := map[string]bool{}
			for _, x := range l {
				m[x] = true
			}
			return m
		}
		dm, mm := in(documented), in(mounted)
		for _, r := range mounted {
			if !dm[r] {
				t.Errorf("mounted but not in the OpenAPI document: %s", r)
			}
		}
		for _, r := range documented {
			if !mm[r] {
				t.Errorf("documented but not mounted: %s", r)
			}
		}
	}
	doc, err := server.OpenAPI()
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil || !bytes.Equal(committed, doc) {
		t.Fatalf("docs/openapi.yaml is not the current document (%v): regenerate it with `go run ./cmd/tangram openapi > docs/openapi.yaml`", err)
	}
	req, _ := http.NewRequest("GET", h.URL+"/api/v1/openapi.yaml", nil)
	req.Header.Set("Authorization", "Bearer "+h.Token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(served, doc) {
		t.Fatalf("served document: %d, %d bytes", resp.StatusCode, len(served))
	}
}

// The admin's first token is kept in the data directory (0600) as soon as
// the admin is created, so a first start that fails afterwards, or a
// closed terminal, loses nothing; a second start does not replace it.
func TestInitialAdminTokenIsKept(t *testing.T) {
	dir := t.TempDir()
	h := servertest.Start(t, servertest.WithDataDir(dir), func(c *server.Config) { c.BootstrapToken = "" })
	path := h.Srv.InitialTokenFile()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || tok != h.Srv.BootstrapToken() {
		t.Fatalf("kept %q, printed %q", tok, h.Srv.BootstrapToken())
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("%s mode %v", path, st.Mode().Perm())
	}
	c := apiclient.New(h.URL, tok)
	if err := c.Do(context.Background(), "GET", "/api/v1/config/apps", nil, nil); err != nil {
		t.Fatalf("the kept token: %v", err)
	}
	h.Srv.Close()
	h2 := servertest.Start(t, servertest.WithDataDir(dir), func(c *server.Config) { c.BootstrapToken = "" })
	if h2.Srv.BootstrapToken() != "" {
		t.Fatal("a second start bootstrapped again")
	}
	if b2, _ := os.ReadFile(path); string(b2) != string(b) {
		t.Fatal("a second start replaced the kept token")
	}
}
